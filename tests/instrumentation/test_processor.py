"""The non-blocking processor: no span lost under asyncio load, never blocks on a bad exporter."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lightspan.config import parse_config
from lightspan.engine import Workflow, fork, sequence, task
from lightspan.instrumentation.processor import NonBlockingBatchProcessor
from lightspan.instrumentation.setup import configure_tracing

CLIENTS = 100
RUNS_PER_CLIENT = 10
SPANS_PER_RUN = 7  # root, sequence, task, fork, 2 branch tasks, annotation


async def leaf(x):
    await asyncio.sleep(0)
    return x


def nested_workflow() -> Workflow:
    """Three levels below the root: sequence > fork > branch > task."""
    return Workflow(
        "load",
        sequence("s", task("first", leaf), fork("f", [task("a", leaf), task("b", leaf)])),
        evaluator=lambda i, o, e: 1.0,
    )


async def run_load(wf: Workflow, clients: int = CLIENTS, runs: int = RUNS_PER_CLIENT) -> float:
    async def client(c: int) -> None:
        for i in range(runs):
            assert (await wf.run(i)).ok

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return time.perf_counter() - t0


def _config(**exporter):
    return parse_config(
        {"agentLightning": {"enabled": True, "exporter": exporter}},
        environ={},
    )


async def test_no_span_is_lost_at_full_asyncio_speed():
    """100 concurrent workflows, 3-deep nesting, a queue far smaller than the spans produced:
    the export thread keeps up, nothing is dropped, every span arrives."""
    exporter = InMemorySpanExporter()
    total = CLIENTS * RUNS_PER_CLIENT * SPANS_PER_RUN
    queue = 2048  # the SDK default: small against the 7,000 spans produced
    assert total > 2 * queue
    handle = configure_tracing(
        _config(max_queue_size=queue, max_export_batch_size=512),
        exporters=[exporter],
        set_global=False,
        environ={},
    )
    try:
        await run_load(nested_workflow())
        assert handle.force_flush(30_000)
        stats = handle.stats()
        assert stats.dropped == 0 and stats.export_failed == 0, stats
        assert stats.received == stats.exported == total, stats
        spans = exporter.get_finished_spans()
        assert len(spans) == total
        per_trace: dict[int, int] = {}
        for s in spans:
            per_trace[s.context.trace_id] = per_trace.get(s.context.trace_id, 0) + 1
        assert len(per_trace) == CLIENTS * RUNS_PER_CLIENT
        assert set(per_trace.values()) == {SPANS_PER_RUN}
    finally:
        handle.shutdown()


class BlockedExporter(SpanExporter):
    """An exporter that hangs (like a dead endpoint with a long timeout) until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def export(self, batch):
        self.calls += 1
        self.release.wait(60)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.release.set()


async def test_a_dead_exporter_does_not_slow_workflows_and_drops_are_counted(caplog):
    wf = nested_workflow()
    clients, runs = 50, 6
    total = clients * runs * SPANS_PER_RUN

    fast_exporter = InMemorySpanExporter()
    fast = configure_tracing(_config(), exporters=[fast_exporter], set_global=False, environ={})
    try:
        await run_load(wf, clients, runs)  # warm-up
        fast_time = await run_load(wf, clients, runs)
    finally:
        fast.shutdown()

    dead_exporter = BlockedExporter()
    queue, batch = 500, 100
    dead = configure_tracing(
        _config(max_queue_size=queue, max_export_batch_size=batch),
        exporters=[dead_exporter],
        set_global=False,
        environ={},
    )
    try:
        with caplog.at_level(logging.WARNING, logger="lightspan.instrumentation.processor"):
            dead_time = await run_load(wf, clients, runs)
        # Not slowed: the same work as with a healthy exporter, within the noise of a shared
        # machine (a processor that waited on this exporter would take a minute per batch).
        assert dead_time < 3.0 * fast_time + 0.5, (dead_time, fast_time)
        stats = dead.stats()
        assert stats.received == total
        assert stats.exported == 0
        in_flight = stats.received - stats.dropped - stats.queued
        assert 0 <= in_flight <= batch, stats
        assert stats.queued <= queue
        assert stats.dropped >= total - queue - batch > 0
        assert any("span queue full" in r.getMessage() for r in caplog.records)
    finally:
        dead_exporter.release.set()
        dead.shutdown()
    final = dead.stats()
    assert final.export_failed > 0  # the exporter refused what it finally got, and we counted it
    assert final.dropped + final.export_failed + final.exported == final.received


def test_force_flush_exports_everything_queued_and_shutdown_rejects_new_spans():
    from opentelemetry.sdk.trace import TracerProvider

    exporter = InMemorySpanExporter()
    proc = NonBlockingBatchProcessor(exporter, schedule_delay_ms=60_000, max_export_batch_size=1000)
    provider = TracerProvider()
    provider.add_span_processor(proc)
    tracer = provider.get_tracer("t")
    for i in range(10):
        tracer.start_span(f"s{i}").end()
    assert len(exporter.get_finished_spans()) == 0  # below a batch, long delay: still queued
    assert proc.force_flush(5_000)
    assert len(exporter.get_finished_spans()) == 10
    provider.shutdown()
    tracer.start_span("late").end()
    assert proc.stats().dropped == 1


def test_invalid_sizes_are_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="max_queue_size"):
        NonBlockingBatchProcessor(InMemorySpanExporter(), max_queue_size=0)
