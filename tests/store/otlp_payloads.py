"""Build OTLP export requests for tests (protobuf messages with realistic span attributes)."""

from __future__ import annotations

import os
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def any_value(v: Any) -> AnyValue:
    a = AnyValue()
    if isinstance(v, bool):
        a.bool_value = v
    elif isinstance(v, int):
        a.int_value = v
    elif isinstance(v, float):
        a.double_value = v
    elif isinstance(v, bytes):
        a.bytes_value = v
    elif isinstance(v, list):
        a.array_value.values.extend(any_value(x) for x in v)
    elif isinstance(v, dict):
        a.kvlist_value.values.extend(KeyValue(key=k, value=any_value(x)) for k, x in v.items())
    else:
        a.string_value = str(v)
    return a


def kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def llm_attributes(i: int) -> dict[str, Any]:
    """~10 attributes, like an instrumented chat completion."""
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "qwen2.5-coder-0.5b",
        "gen_ai.usage.input_tokens": 120 + i,
        "gen_ai.usage.output_tokens": 40,
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": f"What is {i} + {i}? Answer with a number.",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": str(2 * i),
        "gen_ai.request.temperature": 0.7,
        "gen_ai.response.id": f"chatcmpl-{i}",
    }


def make_request(
    n: int,
    *,
    rollout_id: str | None = "ro-test",
    attempt_id: str | None = "at-test",
    ids_on: str = "resource",
    name: str = "openai.chat.completion",
    span_attrs: dict[str, Any] | None = None,
    trace_id: bytes | None = None,
) -> tuple[ExportTraceServiceRequest, list[str]]:
    """A request with ``n`` spans in one trace; returns it and the span ids (hex)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    owner: dict[str, Any] = {}
    if rollout_id is not None:
        owner["agentlightning.rollout_id"] = rollout_id
    if attempt_id is not None:
        owner["agentlightning.attempt_id"] = attempt_id
    res_attrs: dict[str, Any] = {"service.name": "tests"}
    if ids_on == "resource":
        res_attrs.update(owner)
    rs.resource.attributes.extend(kvs(res_attrs))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    tid = trace_id or os.urandom(16)
    now = time.time_ns()
    span_ids = []
    for i in range(n):
        s = ss.spans.add()
        s.trace_id = tid
        sid = os.urandom(8)
        s.span_id = sid
        span_ids.append(sid.hex())
        s.name = name
        s.kind = 3
        s.start_time_unix_nano = now + i * 1000
        s.end_time_unix_nano = now + i * 1000 + 500
        attrs = llm_attributes(i)
        if ids_on == "span":
            attrs.update(owner)
        attrs.update(span_attrs or {})
        s.attributes.extend(kvs(attrs))
        s.status.code = 1
    return req, span_ids
