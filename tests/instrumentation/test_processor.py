"""The non-blocking processor: no span lost under asyncio load (real exporter, real store),
every lost span counted, never blocks on a bad exporter."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lightspan.config import parse_config
from lightspan.engine import Workflow, fork, sequence, task
from lightspan.instrumentation.processor import NonBlockingBatchProcessor
from lightspan.instrumentation.setup import configure_tracing
from lightspan.store.api.client import SyncLightningStoreClient
from tests.store.servers import StoreProcess

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


@pytest.fixture(scope="module")
def store_server():
    """A real store server (in-memory backend): spans go over OTLP/gRPC, as in production."""
    server = StoreProcess("memory").start()
    try:
        yield server
    finally:
        server.stop()


def _store_config(server: StoreProcess, spool: Path, **exporter):
    return parse_config(
        {
            "agentLightning": {
                "enabled": True,
                "store": {"address": server.address, "grpc_address": server.grpc_address},
                "exporter": {"protocol": "grpc", "spool": {"path": str(spool)}, **exporter},
            }
        },
        environ={},
    )


def _stored_spans(server: StoreProcess) -> int:
    with SyncLightningStoreClient(server.address) as client:
        return client.statistics()["total_spans"]


async def _load_through_real_exporter(server: StoreProcess, spool: Path, **exporter):
    """100 concurrent workflows, 3-deep nesting, through ``configure_tracing``'s real exporter
    (OTLP/gRPC to the store server): (processor stats, spans the store gained)."""
    before = _stored_spans(server)
    handle = configure_tracing(_store_config(server, spool, **exporter), set_global=False)
    try:
        await run_load(nested_workflow())
        assert handle.force_flush(120_000)
        stats = handle.stats()
    finally:
        handle.shutdown()
    return stats, _stored_spans(server) - before


async def test_no_span_is_lost_at_full_asyncio_speed_with_the_default_queue(store_server, tmp_path):
    """With the configuration's default queue (65,536) and the real exporter, every one of the
    7,000 spans produced at full asyncio speed reaches the store."""
    total = CLIENTS * RUNS_PER_CLIENT * SPANS_PER_RUN
    stats, stored = await _load_through_real_exporter(store_server, tmp_path)
    assert stats.dropped == 0 and stats.export_failed == 0, stats
    assert stats.received == stats.exported == total, stats
    assert stored == total


async def test_with_a_small_queue_every_lost_span_is_counted(store_server, tmp_path):
    """A queue of 2,048 (the SDK's default) against 7,000 spans: spans may be dropped (the
    exporter encodes and sends while the loop produces), but each one is counted: what was
    received is exactly what the store holds plus what was dropped."""
    total = CLIENTS * RUNS_PER_CLIENT * SPANS_PER_RUN
    queue = 2048
    assert total > 2 * queue
    stats, stored = await _load_through_real_exporter(
        store_server, tmp_path, max_queue_size=queue, max_export_batch_size=512
    )
    assert stats.received == total, stats
    assert stats.export_failed == 0, stats
    assert stats.exported == stored
    assert stats.exported + stats.dropped == total, stats


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
    with pytest.raises(ValueError, match="must not exceed max_queue_size"):
        NonBlockingBatchProcessor(
            InMemorySpanExporter(), max_queue_size=10, max_export_batch_size=11, environ={}
        )


BSP_ENV = {
    "OTEL_BSP_MAX_QUEUE_SIZE": "300",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "40",
    "OTEL_BSP_SCHEDULE_DELAY": "1500",
    "OTEL_BSP_EXPORT_TIMEOUT": "2500",
}


def sizing(proc: NonBlockingBatchProcessor) -> tuple[int, int, float, float]:
    return proc._max_queue, proc._batch, proc._delay_s * 1000, proc._export_timeout_ms


def test_otel_bsp_variables_size_the_processor_and_arguments_win():
    procs = [
        NonBlockingBatchProcessor(InMemorySpanExporter(), environ={}),
        NonBlockingBatchProcessor(InMemorySpanExporter(), environ=BSP_ENV),
        NonBlockingBatchProcessor(
            InMemorySpanExporter(),
            max_queue_size=1000,
            max_export_batch_size=100,
            schedule_delay_ms=50,
            export_timeout_ms=700,
            environ=BSP_ENV,
        ),
    ]
    try:
        assert sizing(procs[0]) == (65536, 512, 500.0, 30000.0)
        assert sizing(procs[1]) == (300, 40, 1500.0, 2500.0)
        assert sizing(procs[2]) == (1000, 100, 50.0, 700.0)
    finally:
        for p in procs:
            p.shutdown()


def test_os_environ_is_read_when_no_environment_is_given(monkeypatch):
    for k, v in BSP_ENV.items():
        monkeypatch.setenv(k, v)
    proc = NonBlockingBatchProcessor(InMemorySpanExporter(), max_export_batch_size=7)
    try:
        assert sizing(proc) == (300, 7, 1500.0, 2500.0)
    finally:
        proc.shutdown()


def test_a_bad_otel_bsp_value_is_reported_and_its_default_used(caplog):
    env = {"OTEL_BSP_MAX_QUEUE_SIZE": "lots", "OTEL_BSP_SCHEDULE_DELAY": "-5"}
    with caplog.at_level(logging.WARNING, logger="lightspan.instrumentation.processor"):
        proc = NonBlockingBatchProcessor(InMemorySpanExporter(), environ=env)
    try:
        assert sizing(proc)[:3] == (65536, 512, 500.0)
        assert (
            "OTEL_BSP_MAX_QUEUE_SIZE='lots' is not a positive integer; using 65536" in caplog.text
        )
        assert "OTEL_BSP_SCHEDULE_DELAY='-5' is not a positive number" in caplog.text
    finally:
        proc.shutdown()


def test_a_queue_smaller_than_the_default_batch_bounds_the_batch():
    """OTEL_BSP_MAX_QUEUE_SIZE=100 with the default batch of 512: batches of 100 (the SDK
    refuses to start); spans still go out as soon as a batch is full."""
    exporter = InMemorySpanExporter()
    proc = NonBlockingBatchProcessor(
        exporter, schedule_delay_ms=60_000, environ={"OTEL_BSP_MAX_QUEUE_SIZE": "100"}
    )
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    provider.add_span_processor(proc)
    try:
        assert sizing(proc)[:2] == (100, 100)
        tracer = provider.get_tracer("t")
        for i in range(100):
            tracer.start_span(f"s{i}").end()
        deadline = time.monotonic() + 10
        while len(exporter.get_finished_spans()) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(exporter.get_finished_spans()) == 100  # a full batch woke the export thread
    finally:
        provider.shutdown()


def test_the_export_timeout_bounds_flush_and_shutdown_of_a_hung_exporter():
    release = threading.Event()

    class Hung(SpanExporter):
        def export(self, spans):
            release.wait(30)
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    from opentelemetry.sdk.trace import TracerProvider

    proc = NonBlockingBatchProcessor(
        Hung(), schedule_delay_ms=10, environ={"OTEL_BSP_EXPORT_TIMEOUT": "300"}
    )
    provider = TracerProvider()
    provider.add_span_processor(proc)
    try:
        provider.get_tracer("t").start_span("s").end()
        time.sleep(0.1)  # the export thread is now stuck in export()
        t0 = time.monotonic()
        assert proc.force_flush() is False
        assert 0.25 <= time.monotonic() - t0 < 5
        t0 = time.monotonic()
        proc.shutdown()
        assert time.monotonic() - t0 < 5
    finally:
        release.set()


def test_configuration_wins_over_otel_bsp_and_defaults_leave_them_their_say():
    c = parse_config(
        {"agentLightning": {"enabled": True, "exporter": {"max_export_batch_size": 64}}},
        environ={},
    )
    h = configure_tracing(
        c, exporters=[InMemorySpanExporter()], set_global=False, instrument=False, environ=BSP_ENV
    )
    try:
        (proc,) = h.processors
        assert sizing(proc) == (300, 64, 1500.0, 2500.0)
    finally:
        h.shutdown()
