"""End to end through the Collector: engine -> SDK -> LightningStoreSpanExporter (OTLP/gRPC) ->
our Collector (collector-config/dev.yaml) -> Jaeger and a real store server. The trace read back
from Jaeger's query API and the spans read back from the store agree span for span (ids,
parents, names) with what the SDK produced. Needs the built Collector and Jaeger binaries
(collector-config/scripts/build-*.sh; CI builds them); the fixtures fail, never skip, without."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from lightspan.exporter import LightningStoreSpanExporter
from lightspan.instrumentation.setup import build_exporters
from lightspan.store.api.client import LightningStoreClient
from tests.exporter.helpers import by_id, config, fork_join_workflow, start_pipeline
from tests.fixtures.collector import CollectorFactory, Jaeger
from tests.store.servers import StoreProcess

pytestmark = pytest.mark.collector


def jaeger_shape(trace: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """span_id -> (parent span_id or "", name) from Jaeger's JSON (one CHILD_OF at most)."""
    out = {}
    for span in trace["spans"]:
        parents = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        assert len(parents) <= 1, span
        out[span["spanID"]] = (parents[0] if parents else "", span["operationName"])
    return out


def jaeger_tags(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["spanID"]: {t["key"]: t["value"] for t in s["tags"]} for s in trace["spans"]}


async def wait_for_store_spans(address: str, rollout_id: str, n: int, wait_s: float = 20.0):
    deadline = time.monotonic() + wait_s
    async with LightningStoreClient(address) as client:
        while True:
            items = (await client.query_spans(rollout_id)).items
            if len(items) >= n or time.monotonic() > deadline:
                return items
            await asyncio.sleep(0.2)


async def test_sdk_to_collector_to_jaeger_and_store_agree_span_for_span(
    jaeger: Jaeger,
    own_sqlite_server: StoreProcess,  # before the Collector: torn down after it
    collector_factory: CollectorFactory,
    fake_llm,
    tmp_path,
):
    store = own_sqlite_server.start()
    collector = collector_factory(
        "dev",
        {
            "LIGHTSPAN_JAEGER_OTLP_GRPC": jaeger.otlp_grpc,
            "LIGHTSPAN_STORE_OTLP_GRPC": store.grpc_address,
        },
    )
    service = f"lightspan-exporter-e2e-{uuid.uuid4().hex[:8]}"
    cfg = config(
        store={"type": "external", "address": store.address},
        exporter={"endpoint": collector.otlp_grpc, "spool": {"path": str(tmp_path / "spool")}},
        tracing={"capture_content": True, "service_name": service},
    )
    # What configure_tracing builds for a Collector endpoint: the store exporter, with its spool.
    (exporter,) = build_exporters(cfg, environ={})
    assert isinstance(exporter, LightningStoreSpanExporter) and exporter.spool is not None
    assert exporter.target is not None and exporter.target.endpoint == collector.otlp_grpc
    pipe = start_pipeline(cfg, exporter)
    try:
        wf = fork_join_workflow(fake_llm.base_url)
        results = [await wf.run(f"q{i}") for i in range(2)]
        await wf.aclose()
        produced = pipe.produced()
    finally:
        pipe.shutdown()
    assert exporter.stats().sent == len(produced) and exporter.stats().dropped == 0

    for r in results:
        assert r.ok, r.error
        mine = [s for s in produced if s.attributes["agentlightning.rollout_id"] == r.rollout_id]
        (trace_id,) = {format(s.context.trace_id, "032x") for s in mine}
        sdk_shape = {
            format(s.context.span_id, "016x"): (
                format(s.parent.span_id, "016x") if s.parent else "",
                s.name,
            )
            for s in mine
        }

        trace = jaeger.wait_for_trace(trace_id, len(mine))
        assert jaeger_shape(trace) == sdk_shape
        (root,) = [s for s in trace["spans"] if not s.get("references")]
        assert trace["processes"][root["processID"]]["serviceName"] == service

        stored = by_id(await wait_for_store_spans(store.address, r.rollout_id, len(mine)))
        store_shape = {sid: (s.parent_id or "", s.name) for sid, s in stored.items()}
        assert store_shape == sdk_shape == jaeger_shape(trace)
        assert {s.trace_id for s in stored.values()} == {trace_id}
        for s in stored.values():
            assert (s.rollout_id, s.attempt_id) == (r.rollout_id, r.attempt_id)

        # The same attribute values on both sides: token usage, the reward.
        tags = jaeger_tags(trace)
        calls = [s for s in stored.values() if s.name == "openai.chat.completion"]
        assert sum(c.attributes["gen_ai.usage.input_tokens"] for c in calls) == r.input_tokens
        for c in calls:
            for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
                assert tags[c.span_id][key] == c.attributes[key]
        (reward,) = [s for s in stored.values() if s.name == "agentlightning.annotation"]
        assert reward.attributes["agentlightning.reward.0.value"] == 0.5
        assert tags[reward.span_id]["agentlightning.reward.0.value"] == 0.5
