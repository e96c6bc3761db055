"""Deterministic OpenTelemetry spans, built the same way in our venv and in the Agent Lightning
venv, so that both sides' conversions of the *same* spans can be compared field by field.

Depends only on opentelemetry-sdk and opentelemetry-proto (present in both environments).
"""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

ROLLOUT_ID = "ro-sample000001"
ATTEMPT_ID = "at-sample01"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
T0 = 1_700_000_000_000_000_000


def _ctx(span_id: int, remote: bool = False) -> SpanContext:
    return SpanContext(
        TRACE_ID,
        span_id,
        is_remote=remote,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1")]),
    )


def sample_readable_spans() -> list[ReadableSpan]:
    resource = Resource({"service.name": "sample", "deployment.environment": "test"})
    root = ReadableSpan(
        name="agent.run",
        context=_ctx(0x1111111111111111),
        parent=None,
        resource=resource,
        attributes={"agentlightning.tag.0": "math", "n": 3},
        kind=SpanKind.INTERNAL,
        status=Status(StatusCode.OK),
        start_time=T0,
        end_time=T0 + 5_000_000,
    )
    llm = ReadableSpan(
        name="openai.chat.completion",
        context=_ctx(0x2222222222222222),
        parent=_ctx(0x1111111111111111),
        resource=resource,
        attributes={
            "gen_ai.request.model": "m",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "2+2?",
            "gen_ai.completion.0.content": "4",
            "gen_ai.usage.input_tokens": 12,
            "temperature": 0.5,
            "stream": False,
            "prompt_token_ids": (1, 2, 3),
            "stop": ("\n", "END"),
        },
        events=(Event("token", {"i": 1}, timestamp=T0 + 1_000),),
        links=(Link(_ctx(0x3333333333333333, remote=True), {"why": "retry"}),),
        kind=SpanKind.CLIENT,
        status=Status(StatusCode.ERROR, "rate limited"),
        start_time=T0 + 1_000,
        end_time=T0 + 4_000_000,
    )
    reward = ReadableSpan(
        name="agentlightning.annotation",
        context=_ctx(0x4444444444444444),
        parent=_ctx(0x1111111111111111),
        resource=resource,
        attributes={
            "agentlightning.reward.0.name": "primary",
            "agentlightning.reward.0.value": 1.0,
        },
        start_time=T0 + 4_500_000,
        end_time=T0 + 4_500_000,
    )
    return [root, llm, reward]


def with_owner(
    spans: list[ReadableSpan],
    rollout_id: str,
    attempt_id: str,
    first_sequence_id: int | None = None,
) -> list[ReadableSpan]:
    """The spans with their rollout and attempt ids (and sequence ids from
    ``first_sequence_id``) as span attributes, as lightspan's instrumentation writes them."""
    out = []
    for i, s in enumerate(spans):
        attrs = dict(s.attributes or {})
        attrs["agentlightning.rollout_id"] = rollout_id
        attrs["agentlightning.attempt_id"] = attempt_id
        if first_sequence_id is not None:
            attrs["agentlightning.span_sequence_id"] = first_sequence_id + i
        out.append(
            ReadableSpan(
                name=s.name,
                context=s.context,
                parent=s.parent,
                resource=s.resource,
                attributes=attrs,
                events=s.events,
                links=s.links,
                kind=s.kind,
                status=s.status,
                start_time=s.start_time,
                end_time=s.end_time,
            )
        )
    return out


def _kv(key: str, value: object) -> KeyValue:
    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, bytes):
        v.bytes_value = value
    elif isinstance(value, (list, tuple)):
        v.array_value.values.extend(_kv("_", x).value for x in value)
    else:
        v.string_value = str(value)
    return KeyValue(key=key, value=v)


def sample_request() -> ExportTraceServiceRequest:
    """The same spans as OTLP protobuf, rollout/attempt on the resource, one on the span."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.schema_url = "https://opentelemetry.io/schemas/1.21.0"
    rs.resource.attributes.extend(
        [
            _kv("service.name", "sample"),
            _kv("agentlightning.rollout_id", ROLLOUT_ID),
            _kv("agentlightning.attempt_id", ATTEMPT_ID),
        ]
    )
    ss = rs.scope_spans.add()
    ss.scope.name = "sample"
    for rspan in sample_readable_spans():
        s = ss.spans.add()
        s.trace_id = rspan.context.trace_id.to_bytes(16, "big")
        s.span_id = rspan.context.span_id.to_bytes(8, "big")
        if rspan.parent is not None:
            s.parent_span_id = rspan.parent.span_id.to_bytes(8, "big")
        s.name = rspan.name
        s.start_time_unix_nano = rspan.start_time
        s.end_time_unix_nano = rspan.end_time
        s.status.code = {"UNSET": 0, "OK": 1, "ERROR": 2}[rspan.status.status_code.name]
        s.status.message = rspan.status.description or ""
        s.attributes.extend(_kv(k, v) for k, v in rspan.attributes.items())
        s.attributes.append(_kv("raw", b"\x01\xab"))
        for e in rspan.events:
            ev = s.events.add()
            ev.name = e.name
            ev.time_unix_nano = e.timestamp
            ev.attributes.extend(_kv(k, v) for k, v in e.attributes.items())
        for link in rspan.links:
            ln = s.links.add()
            ln.trace_id = link.context.trace_id.to_bytes(16, "big")
            ln.span_id = link.context.span_id.to_bytes(8, "big")
            ln.attributes.extend(_kv(k, v) for k, v in link.attributes.items())
    # a span-level sequence id overrides nothing else
    ss.spans[2].attributes.append(_kv("agentlightning.span_sequence_id", "7"))
    return req
