"""``lightspan.store.intake.otlp`` (the Python converter, the specification): OTLP protobuf/JSON ->
Agent Lightning Span dicts; SDK spans reach it as OTLP bytes."""

from __future__ import annotations

import base64

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lightspan.exporter.encode import SpanEncoder
from lightspan.store.api.models import Span
from lightspan.store.intake.convert import convert
from lightspan.store.intake.otlp import (
    OtlpDecodeError,
    convert_timestamp,
    decode_export_request,
    parse_trace_state,
    request_from_json,
    spans_from_request,
)
from lightspan.store.intake.span_row import SpanRow
from tests.store.interop.sample_spans import sample_readable_spans, sample_request, with_owner
from tests.store.otlp_payloads import kvs, make_request


def test_timestamps() -> None:
    assert convert_timestamp(0) is None and convert_timestamp(None) is None
    assert convert_timestamp(1_700_000_000_500_000_000) == 1_700_000_000.5
    assert convert_timestamp(1_700_000_000) == 1_700_000_000.0  # already seconds


def test_trace_state() -> None:
    assert parse_trace_state("a=1, b=x=y ,bad") == {"a": "1", "b": "x=y"}
    assert parse_trace_state("") == {}


def test_ids_from_span_attributes_win_over_resource() -> None:
    req, _ = make_request(
        2,
        rollout_id="ro-res",
        attempt_id="at-res",
        span_attrs={"agentlightning.rollout_id": "ro-span", "agentlightning.span_sequence_id": 5},
    )
    out = spans_from_request(req)
    assert [(s["rollout_id"], s["attempt_id"], s["sequence_id"]) for s in out.spans] == [
        ("ro-span", "at-res", 5),
        ("ro-span", "at-res", 5),
    ]


@pytest.mark.parametrize("seq", ["-1", "abc", True])
def test_invalid_sequence_ids_are_issued_by_the_store(seq: object) -> None:
    req, _ = make_request(1, span_attrs={"agentlightning.span_sequence_id": seq})
    assert spans_from_request(req).spans[0]["sequence_id"] is None


def test_rejections_carry_reasons() -> None:
    req, _ = make_request(2, rollout_id=None)
    bad, _ = make_request(3)
    spans = bad.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b"\x00" * 16
    spans[1].span_id = b"\x01" * 7
    spans[2].parent_span_id = b"\x01" * 3
    req.resource_spans.extend(bad.resource_spans)
    out = spans_from_request(req)
    assert out.spans == []
    reasons = [r.reason for r in out.rejected]
    assert reasons[:2] == ["missing agentlightning.rollout_id"] * 2
    assert reasons[2].startswith("invalid trace_id") and reasons[3].startswith("invalid span_id")
    assert reasons[4].startswith("invalid parent_span_id")
    msg = out.error_message()
    assert msg.startswith("rejected 5 span(s)") and "missing agentlightning.rollout_id" in msg


def test_decode_errors_say_what_is_wrong() -> None:
    with pytest.raises(OtlpDecodeError, match="not a protobuf ExportTraceServiceRequest"):
        decode_export_request(b"\xff\xff\xff")
    assert len(decode_export_request(b"").resource_spans) == 0
    with pytest.raises(OtlpDecodeError, match="not JSON"):
        request_from_json(b"{")
    with pytest.raises(OtlpDecodeError, match="must be an object"):
        request_from_json(b"[]")
    with pytest.raises(OtlpDecodeError, match="not a hex id"):
        request_from_json({"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "xyz"}]}]}]})


def test_json_and_protobuf_agree() -> None:
    from google.protobuf import json_format

    req = sample_request()
    as_json = json_format.MessageToDict(req)

    def to_hex(node: object) -> None:  # protobuf's JSON mapping uses base64; OTLP/JSON uses hex
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                    node[k] = base64.b64decode(v).hex()
                else:
                    to_hex(v)
        elif isinstance(node, list):
            for x in node:
                to_hex(x)

    to_hex(as_json)
    assert spans_from_request(request_from_json(as_json)).spans == spans_from_request(req).spans


def test_sdk_spans_reach_the_store_as_the_otlp_path_stores_them() -> None:
    """The in-process path (the exporter's encoder, then the store's one conversion) stores what
    the SDK's own OTLP encoding converts to, and the rows validate as Span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {"agentlightning.rollout_id": "ro-1", "agentlightning.attempt_id": "at-1"}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root", attributes={"l": ["a", "b"], "n": 1}) as root:
        root.add_event("e", {"k": True})
        with tracer.start_as_current_span("child"):
            pass
    finished = exporter.get_finished_spans()
    in_process = convert(SpanEncoder().encode_request(finished))
    via_otlp = spans_from_request(encode_spans(finished))
    assert not in_process.rejected and not via_otlp.rejected
    assert len(in_process.rows) == 2
    for row, d in zip(in_process.rows, via_otlp.spans, strict=True):
        assert row.doc() == SpanRow(d).doc()
        row.sequence_id = 1
        assert Span.model_validate_json(row.doc()).name == d["name"]


def test_sdk_spans_without_owner_are_rejected() -> None:
    encoder = SpanEncoder()
    out = convert(encoder.encode_request(sample_readable_spans()))
    assert not out.rows and len(out.rejected) == 3
    assert {r.reason for r in out.rejected} == {
        "missing agentlightning.rollout_id and agentlightning.attempt_id"
    }
    out = convert(encoder.encode_request(with_owner(sample_readable_spans(), "ro-x", "at-x")))
    assert len(out.rows) == 3 and not out.rejected
    llm = Span.model_validate_json(out.rows[1].doc())
    assert llm.attributes["prompt_token_ids"] == [1, 2, 3]
    assert llm.links[0].context.is_remote is True


def test_kvlist_and_mixed_arrays_are_flattened() -> None:
    req, _ = make_request(1)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    del span.attributes[:]
    span.attributes.extend(
        kvs({"kv": {"a": [1, 2], "b": {"c": None or "d"}}, "m": [1, 2.5], "e": []})
    )
    attrs = spans_from_request(req).spans[0]["attributes"]
    assert attrs == {"kv.a": [1, 2], "kv.b.c": "d", "m.0": 1, "m.1": 2.5, "e": []}
