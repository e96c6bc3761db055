"""In-process mode: a real engine workflow, traced by the instrumentation, into an in-memory
store through the exporter (conversion by lightspan.store.intake.otlp, no protobuf, no server)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest
from opentelemetry.trace import SpanKind

from lightspan.exporter import LightningStoreSpanExporter, exporter_from_config
from lightspan.instrumentation.setup import build_exporters
from lightspan.store.backends.memory import InMemoryLightningStore
from tests.exporter.helpers import (
    MODEL,
    assert_core_names,
    by_id,
    config,
    fork_join_workflow,
    start_pipeline,
)


async def test_workflow_spans_arrive_in_the_in_process_store_with_ids_parents_and_reward(
    fake_llm,
):
    cfg = config(store={"type": "in_memory"})
    exporter = exporter_from_config(cfg, environ={})
    assert isinstance(exporter.store, InMemoryLightningStore)
    assert exporter.target is None and exporter.spool is None
    pipe = start_pipeline(cfg, exporter)
    try:
        wf = fork_join_workflow(fake_llm.base_url)
        result = await wf.run("two plus two?")
        await wf.aclose()
        assert result.ok, result.error
        produced = pipe.produced()
        page = exporter.call_store(lambda: exporter.store.query_spans(result.rollout_id))
        stored = by_id(page.items)

        # Every span the SDK produced, exactly once, with its rollout/attempt ids.
        assert set(stored) == {format(s.context.span_id, "016x") for s in produced}
        assert_core_names(Counter(s.name for s in stored.values()))
        for s in stored.values():
            assert (s.rollout_id, s.attempt_id) == (result.rollout_id, result.attempt_id)
            assert s.sequence_id >= 1
        assert len({s.sequence_id for s in stored.values()}) == len(stored)

        # Parents and trace ids are the SDK's.
        for sdk in produced:
            span = stored[format(sdk.context.span_id, "016x")]
            assert span.trace_id == format(sdk.context.trace_id, "032x")
            parent = format(sdk.parent.span_id, "016x") if sdk.parent else None
            assert span.parent_id == parent
            assert span.start_time == pytest.approx(sdk.start_time / 1e9, abs=1e-6)
        root = next(s for s in stored.values() if s.parent_id is None)
        assert root.name == "invoke_workflow fj"
        # The LLM steps sit under the fork (possibly through a per-branch span).
        for s in stored.values():
            if s.name in ("llm a", "llm b"):
                chain = []
                while s.parent_id is not None:
                    s = stored[s.parent_id]
                    chain.append(s.name)
                assert "fork f" in chain and chain[-1] == root.name, chain

        # Attributes: the LLM calls' GenAI attributes (kind kept as an attribute-free fact in
        # the SDK span; the Span format has none), token usage, captured content, the reward.
        calls = [s for s in stored.values() if s.name == "openai.chat.completion"]
        sdk_calls = [s for s in produced if s.name == "openai.chat.completion"]
        assert {s.kind for s in sdk_calls} == {SpanKind.CLIENT}
        assert sum(c.attributes["gen_ai.usage.input_tokens"] for c in calls) == (
            result.input_tokens
        )
        assert sum(c.attributes["gen_ai.usage.output_tokens"] for c in calls) == (
            result.output_tokens
        )
        for c in calls:
            assert c.attributes["gen_ai.request.model"] == MODEL
            assert c.attributes["gen_ai.prompt.1.content"] == "Q: two plus two?"
            assert c.attributes["gen_ai.completion.0.content"] == "echo: Q: two plus two?"
            assert c.attributes["gen_ai.response.finish_reasons"] == ["stop"]
        (reward,) = [s for s in stored.values() if s.name == "agentlightning.annotation"]
        assert reward.attributes["agentlightning.reward.0.name"] == "primary"
        assert reward.attributes["agentlightning.reward.0.value"] == 0.5
        assert reward.parent_id == root.span_id
        assert root.resource.attributes["service.name"] == "lightspan-workflow"

        # The store registered the rollout from its spans.
        rollout = exporter.call_store(lambda: exporter.store.get_rollout_by_id(result.rollout_id))
        assert rollout is not None and rollout.status == "succeeded"

        stats = exporter.stats()
        assert stats.sent == len(produced) and stats.dropped == stats.rejected == 0
    finally:
        pipe.shutdown()


async def test_store_calls_run_on_the_exporters_loop_not_the_workflows(fake_llm):
    """The store's coroutines never run in the workflow's thread or event loop."""
    seen: list[tuple[int, asyncio.AbstractEventLoop]] = []
    store = InMemoryLightningStore()
    original = store.add_span_rows  # the intake's way into the store

    async def spy(spans, *args, **kwargs):
        seen.append((threading.get_ident(), asyncio.get_running_loop()))
        return await original(spans, *args, **kwargs)

    store.add_span_rows = spy  # type: ignore[method-assign]
    exporter = LightningStoreSpanExporter.in_process(store)
    pipe = start_pipeline(config(store={"type": "in_memory"}), exporter)
    try:
        wf = fork_join_workflow(fake_llm.base_url)
        assert (await wf.run("x")).ok
        await wf.aclose()
        pipe.flush()
        assert seen
        assert {t for t, _ in seen}.isdisjoint({threading.get_ident()})
        assert all(loop is not asyncio.get_running_loop() for _, loop in seen)
    finally:
        pipe.shutdown()


async def test_replaying_a_batch_into_the_store_is_deduplicated(fake_llm):
    exporter = exporter_from_config(config(store={"type": "in_memory"}), environ={})
    pipe = start_pipeline(config(store={"type": "in_memory"}), exporter)
    try:
        wf = fork_join_workflow(fake_llm.base_url)
        r = await wf.run("x")
        await wf.aclose()
        produced = pipe.produced()
        assert exporter.export(produced).name == "SUCCESS"  # the same batch again
        stats = exporter.stats()
        assert stats.sent == len(produced) and stats.duplicates == len(produced)
        page = exporter.call_store(lambda: exporter.store.query_spans(r.rollout_id))
        assert len(page.items) == len(produced)
    finally:
        pipe.shutdown()


def test_configure_tracing_plug_point_builds_this_exporter():
    cfg = config(store={"type": "in_memory"})
    (exporter,) = build_exporters(cfg, environ={})
    try:
        assert isinstance(exporter, LightningStoreSpanExporter)
        assert exporter.store is not None
    finally:
        exporter.shutdown()


async def test_counters_are_opentelemetry_metrics_when_a_meter_provider_collects(fake_llm):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    store = InMemoryLightningStore()
    exporter = LightningStoreSpanExporter.in_process(
        store, meter_provider=MeterProvider(metric_readers=[reader])
    )
    pipe = start_pipeline(config(store={"type": "in_memory"}), exporter)
    try:
        wf = fork_join_workflow(fake_llm.base_url)
        assert (await wf.run("x")).ok
        await wf.aclose()
        produced = pipe.produced()
    finally:
        pipe.shutdown()
    (metric,) = [
        m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "lightspan.exporter.spans"
    ]
    by_outcome = {p.attributes["outcome"]: p.value for p in metric.data.data_points}
    assert by_outcome["sent"] == len(produced) and by_outcome["dropped"] == 0
