"""A target that accepts connections but never answers (a hung store or Collector): the
exporter gives up within its timeout, spools, and does not touch the network again until the
replay thread gets through; the processor's thread is never held for long."""

from __future__ import annotations

import socket
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lightspan.exporter import LightningStoreSpanExporter, resolve_target


def spans(n: int):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    ids = {"agentlightning.rollout_id": "ro-slow", "agentlightning.attempt_id": "at-slow"}
    for _ in range(n):
        tracer.start_span("s", attributes=ids).end()
    return list(memory.get_finished_spans())


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_hung_target_costs_one_timeout_then_batches_go_straight_to_the_spool(protocol, tmp_path):
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # never accepted, never answered
        endpoint = f"127.0.0.1:{hung.getsockname()[1]}"
        target = resolve_target(protocol, endpoint, timeout=0.5, environ={})
        exporter = LightningStoreSpanExporter.remote(
            target, spool_path=str(tmp_path), replay_backoff_s=5.0
        )
        try:
            t0 = time.monotonic()
            assert exporter.export(spans(5)).name == "SUCCESS"  # spooled, not lost
            first = time.monotonic() - t0
            assert first < 0.5 + 1.0, f"first export held the thread {first:.2f}s"
            assert exporter.is_down
            t0 = time.monotonic()
            for _ in range(20):
                exporter.export(spans(5))
            rest = time.monotonic() - t0
            assert rest < 1.0, f"20 exports while down took {rest:.2f}s"
            s = exporter.stats()
            assert (s.spooled, s.sent, s.dropped, s.spool_files) == (105, 0, 0, 21)
        finally:
            t0 = time.monotonic()
            exporter.shutdown(timeout_s=0.5)
            assert time.monotonic() - t0 < 5.0
