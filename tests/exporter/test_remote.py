"""Remote mode: engine -> exporter -> a real ``lightspan store serve`` (SQLite) over OTLP/gRPC and
OTLP/HTTP; spans read back through the REST client."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lightspan.exporter import Spool, exporter_from_config, spool_dir_for, target_from_config
from lightspan.instrumentation.setup import configure_tracing
from lightspan.store.api.client import LightningStoreClient
from tests.exporter.helpers import (
    MODEL,
    assert_core_names,
    by_id,
    config,
    fork_join_workflow,
    start_pipeline,
)
from tests.store.servers import StoreProcess


def remote_config(server: StoreProcess, protocol: str, spool: Path, **store: object):
    return config(
        store={
            "type": "external",
            "address": server.address,
            "grpc_address": server.grpc_address,
            **store,
        },
        exporter={"protocol": protocol, "spool": {"path": str(spool)}},
    )


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [("grpc", "none"), ("http/protobuf", "none"), ("grpc", "gzip"), ("http/protobuf", "gzip")],
)
async def test_fork_join_workflow_reaches_the_store_server(
    protocol, compression, sqlite_server, fake_llm, tmp_path
):
    cfg = remote_config(sqlite_server, protocol, tmp_path / "spool")
    env = {"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": compression}
    exporter = exporter_from_config(cfg, environ=env)
    assert exporter.target is not None and exporter.target.protocol == protocol
    assert exporter.target.compression == (None if compression == "none" else "gzip")
    pipe = start_pipeline(cfg, exporter)
    try:
        wf = fork_join_workflow(fake_llm.base_url)
        results = [await wf.run(f"question {i}") for i in range(3)]
        await wf.aclose()
        produced = pipe.produced()
    finally:
        pipe.shutdown()
    assert all(r.ok for r in results)
    stats = exporter.stats()
    assert (stats.sent, stats.spooled, stats.dropped, stats.rejected) == (len(produced), 0, 0, 0)

    async with LightningStoreClient(sqlite_server.address) as client:
        for r in results:
            page = await client.query_spans(r.rollout_id)
            stored = by_id(page.items)
            mine = [
                s for s in produced if s.attributes["agentlightning.rollout_id"] == r.rollout_id
            ]
            assert set(stored) == {format(s.context.span_id, "016x") for s in mine}
            assert_core_names(Counter(s.name for s in stored.values()))
            for sdk in mine:
                span = stored[format(sdk.context.span_id, "016x")]
                assert span.attempt_id == r.attempt_id
                assert span.trace_id == format(sdk.context.trace_id, "032x")
                assert span.parent_id == (
                    format(sdk.parent.span_id, "016x") if sdk.parent else None
                )
                assert span.name == sdk.name
            calls = [s for s in stored.values() if s.name == "openai.chat.completion"]
            assert sum(c.attributes["gen_ai.usage.input_tokens"] for c in calls) == r.input_tokens
            assert sum(c.attributes["gen_ai.usage.output_tokens"] for c in calls) == r.output_tokens
            assert {c.attributes["gen_ai.request.model"] for c in calls} == {MODEL}
            (reward,) = [s for s in stored.values() if s.name == "agentlightning.annotation"]
            assert reward.attributes["agentlightning.reward.0.value"] == 0.5
            rollout = await client.get_rollout_by_id(r.rollout_id)
            assert rollout is not None and rollout.status == "succeeded"
            assert rollout.attempt.attempt_id == r.attempt_id


async def test_token_goes_as_a_bearer_header_and_a_wrong_one_is_dropped_not_spooled(
    fake_llm, tmp_path
):
    server = StoreProcess("sqlite", str(tmp_path / "auth.db"), token="s3cret").start()
    try:
        for token, ok in (("s3cret", True), ("wrong", False)):
            cfg = remote_config(server, "grpc", tmp_path / f"spool-{token}", token=token)
            exporter = exporter_from_config(cfg, environ={})
            pipe = start_pipeline(cfg, exporter)
            try:
                wf = fork_join_workflow(fake_llm.base_url)
                r = await wf.run("q")
                await wf.aclose()
                produced = pipe.produced()
            finally:
                pipe.shutdown()
            stats = exporter.stats()
            if ok:
                assert stats.sent == len(produced) and stats.dropped == 0
                async with LightningStoreClient(server.address, token="s3cret") as client:
                    assert len((await client.query_spans(r.rollout_id)).items) == len(produced)
            else:
                # UNAUTHENTICATED is not retryable: dropped and counted, the spool stays empty.
                assert stats.sent == 0 and stats.dropped == len(produced)
                assert stats.spooled == 0 and stats.spool_files == 0
    finally:
        server.stop()


async def test_a_new_process_replays_what_an_earlier_one_left_in_the_spool(
    sqlite_server, fake_llm, tmp_path
):
    """Spans spooled by a process that ended while the store was down are delivered by the next
    process started with the same configuration (same spool directory, same target)."""
    cfg = remote_config(sqlite_server, "grpc", tmp_path / "spool")
    # "The earlier process": its spans were spooled for this target and never sent.
    witness = InMemorySpanExporter()
    handle = configure_tracing(cfg, exporters=[witness], set_global=False, environ={})
    try:
        wf = fork_join_workflow(fake_llm.base_url)
        r = await wf.run("left behind")
        await wf.aclose()
        assert handle.force_flush()
    finally:
        handle.shutdown()
    produced = list(witness.get_finished_spans())
    target = target_from_config(cfg, environ={})
    Spool(spool_dir_for(tmp_path / "spool", target), 10**6).add(
        encode_spans(produced).SerializeToString(), len(produced)
    )

    exporter = exporter_from_config(cfg, environ={})
    try:
        assert exporter.stats().spool_files == 1
        assert exporter.drain_spool(30)
        assert exporter.stats().replayed == len(produced)
    finally:
        exporter.shutdown()
    async with LightningStoreClient(sqlite_server.address) as client:
        stored = by_id((await client.query_spans(r.rollout_id)).items)
    assert set(stored) == {format(s.context.span_id, "016x") for s in produced}


async def test_production_rollouts_keep_their_input_and_expected_value(
    sqlite_server, fake_llm, tmp_path
):
    """A traced production run's root span carries its input: the store copies it into the
    auto-registered rollout as a dataset row, the shape the runner and the trainer read back."""
    cfg = remote_config(sqlite_server, "http/protobuf", tmp_path / "spool")
    exporter = exporter_from_config(cfg, environ={})
    pipe = start_pipeline(cfg, exporter)
    try:
        wf = fork_join_workflow(fake_llm.base_url)
        labeled = await wf.run({"q": "2+2"}, expected="4")
        unlabeled = await wf.run("plain")
        await wf.aclose()
    finally:
        pipe.shutdown()
    async with LightningStoreClient(sqlite_server.address) as client:
        got = await client.get_rollout_by_id(labeled.rollout_id)
        assert got is not None and got.input == {"input": {"q": "2+2"}, "expected": "4"}
        got = await client.get_rollout_by_id(unlabeled.rollout_id)
        assert got is not None and got.input == {"input": "plain"}
