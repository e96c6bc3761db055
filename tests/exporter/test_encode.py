"""The exporter's OTLP encoder writes exactly the bytes of the SDK's ``encode_spans``."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from lightspan.config import parse_config
from lightspan.engine import Workflow, fork, sequence, task
from lightspan.engine.steps import RetryPolicy
from lightspan.exporter.encode import SpanEncoder, encode_request
from lightspan.instrumentation.setup import configure_tracing


def sdk_bytes(spans: list[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def record(fn, resource: Resource | None = None) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource or Resource.create({"service.name": "enc"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    fn(provider)
    provider.shutdown()
    return list(memory.get_finished_spans())


ATTRIBUTE_VALUES = {
    "text": "hello",
    "empty": "",
    "unicode": "naïve ✓ 日本",
    "long": "x" * 300,
    "true": True,
    "false": False,
    "zero": 0,
    "one": 1,
    "negative": -5,
    "int64 min": -(1 << 63),
    "int64 max": (1 << 63) - 1,
    "float": 0.25,
    "float zero": 0.0,
    "nan-free negative": -1e300,
    "strings": ["a", "", "b"],
    "ints": [1, -2, 300],
    "floats": [0.5, 1.5],
    "bools": [True, False],
    "empty list": [],
}


def test_every_attribute_type_kind_status_event_and_link_encodes_identically():
    remote = SpanContext(0xABC, 0x123, is_remote=True, trace_flags=TraceFlags(1))
    local = SpanContext(0xDEF, 0x456, is_remote=False)

    def spans(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("scope-a", "1.2", schema_url="https://example.com/s")
        other = provider.get_tracer("scope-b")
        for kind in SpanKind:
            with tracer.start_as_current_span(f"k {kind.name}", kind=kind):
                pass
        with tracer.start_as_current_span("root", attributes=ATTRIBUTE_VALUES) as root:
            root.add_event("plain")
            root.add_event("with attrs", {"a": 1, "b": ["x"], "c": 2.5}, timestamp=123)
            root.set_status(Status(StatusCode.ERROR, "it failed: ✗"))
            with other.start_as_current_span(
                "child", links=[Link(remote, {"l": "v"}), Link(local)]
            ):
                pass
            with tracer.start_as_current_span("ok") as ok:
                ok.set_status(Status(StatusCode.OK))
            try:
                with tracer.start_as_current_span("raises"):
                    raise ValueError("boom")
            except ValueError:
                pass
        parent = SpanContext(0x1, 0x2, True, TraceFlags(1), TraceState([("k", "v"), ("a", "b")]))
        ctx = set_span_in_context(NonRecordingSpan(parent))
        tracer.start_span("remote parent", context=ctx).end()
        tracer.start_span("").end()

    recorded = record(spans)
    assert len(recorded) == 11
    assert encode_request(recorded) == sdk_bytes(recorded)
    encoder = SpanEncoder()
    for _ in range(2):  # cached pairs, resources and scopes give the same bytes
        assert encoder.encode_request(recorded) == sdk_bytes(recorded)
        assert encoder.encode_request(recorded[::-1]) == sdk_bytes(recorded[::-1])


@pytest.mark.parametrize(
    "value",
    [None, b"\x00bytes", {"nested": 1}, 1 << 64, -(1 << 70), ["a", None], [b"x"], ("a", {"b": 2})],
    ids=repr,
)
def test_values_it_does_not_write_itself_go_through_the_sdk_encoder(value):
    def spans(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("t")
        tracer.start_span("before", attributes={"k": "v"}).end()
        span = tracer.start_span("odd")
        span._attributes._dict["odd"] = value  # what a processor may put there unchecked
        span.end()
        tracer.start_span("after", attributes={"k": "v"}).end()

    recorded = record(spans)
    assert encode_request(recorded) == sdk_bytes(recorded)


def test_bool_int_and_float_values_that_compare_equal_keep_their_types():
    def spans(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("t")
        for value in (1, True, 1.0, 0, False, 0.0):
            tracer.start_span("s", attributes={"k": value}).end()

    recorded = record(spans)
    encoder = SpanEncoder()
    assert encoder.encode_request(recorded) == sdk_bytes(recorded)
    values = [
        s.attributes[0].value.WhichOneof("value")
        for rs in ExportTraceServiceRequest.FromString(
            encoder.encode_request(recorded)
        ).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert values == ["int_value", "bool_value", "double_value"] * 2


def test_spans_of_several_resources_are_grouped_like_the_sdk_groups_them():
    a = record(lambda p: p.get_tracer("t").start_span("a1").end(), Resource.create({"r": "a"}))
    b = record(lambda p: p.get_tracer("t").start_span("b1").end(), Resource.create({"r": "b"}))
    a2 = record(
        lambda p: p.get_tracer("u").start_span("a2").end(),
        Resource({"r": "a", **a[0].resource.attributes}, schema_url="https://s"),
    )
    mixed = [a[0], b[0], a2[0], a[0], b[0]]
    assert encode_request(mixed) == sdk_bytes(mixed)


def test_a_traced_workflow_run_encodes_identically():
    """The spans lightspan itself produces: root, sequence, fork (join lists), tasks, retries."""
    memory = InMemorySpanExporter()
    cfg = parse_config({"agentLightning": {"enabled": True}}, environ={})
    handle = configure_tracing(cfg, exporters=[memory], set_global=False, environ={})
    try:
        attempts = []

        def flaky(x):
            attempts.append(x)
            if len(attempts) < 2:
                raise RuntimeError("first attempt fails")
            return x

        wf = Workflow(
            "enc",
            sequence(
                "s",
                fork("f", [task("a", lambda x: x), task("b", flaky, retry=RetryPolicy(2, 0.0))]),
                task("last", lambda d: 1),
            ),
        )
        assert asyncio.run(wf.run({"q": "x"})).ok
        assert handle.force_flush()
        spans = list(memory.get_finished_spans())
    finally:
        handle.shutdown()
    assert len(spans) == 6 and any(s.events for s in spans)
    assert encode_request(spans) == sdk_bytes(spans)


def test_long_text_is_not_kept_for_reuse_and_the_cache_is_bounded():
    """Captured prompts and completions do not repeat: keeping them would only fill memory."""

    def spans(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("t")
        for i in range(5000):
            tracer.start_span("s", attributes={"prompt": "p" * 10_000 + str(i), "i": i}).end()

    recorded = record(spans)
    encoder = SpanEncoder()
    for i in range(0, len(recorded), 512):
        batch = recorded[i : i + 512]
        assert encoder.encode_request(batch) == sdk_bytes(batch)
    assert 0 < len(encoder._pairs) <= 4096
    assert all(len(key) + len(str(value)) < 300 for key, value in encoder._pairs)
