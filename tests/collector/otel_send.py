"""Send spans with the real OpenTelemetry Python SDK and remember exactly what was sent.

Why a private TracerProvider per call: tests must not touch the global provider that the
instrumentation tests configure, and each test needs its own ``service.name`` so it can find
its traces in a shared Jaeger.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@dataclass(frozen=True)
class SentSpan:
    """A span as the SDK produced it; ids in lowercase hex like Jaeger's JSON."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str


def sent_span(span: ReadableSpan) -> SentSpan:
    ctx = span.get_span_context()
    return SentSpan(
        trace_id=f"{ctx.trace_id:032x}",
        span_id=f"{ctx.span_id:016x}",
        parent_span_id=f"{span.parent.span_id:016x}" if span.parent else "",
        name=span.name,
    )


@contextmanager
def otlp_tracer_provider(
    endpoint: str, service: str, protocol: Literal["grpc", "http"] = "grpc"
) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A provider exporting over OTLP to ``endpoint`` and recording every span it ended.

    ``endpoint`` is ``host:port`` for gRPC, ``http://host:port`` for HTTP. On exit the
    provider is flushed and shut down, so everything has left the process.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=10)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        exporter = HttpExporter(endpoint=f"{endpoint}/v1/traces", timeout=10)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
    try:
        yield provider, memory
    finally:
        assert provider.force_flush(15_000), "the SDK could not flush its spans to the Collector"
        provider.shutdown()
