"""The Python converter's own guarantees, and the row path against the model path.

``otlp.spans_from_protobuf`` rejects only the spans holding a value nested too deep, even where
protobuf's parser refuses the whole body (``otlp_depth.py``), and spans stored through
``SpanRow`` (no pydantic models) must be stored as exactly the JSON ``Span`` models are.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from lightspan.store.api.models import Span
from lightspan.store.backends.memory import InMemoryLightningStore
from lightspan.store.backends.sqlite import SqliteLightningStore
from lightspan.store.core.store import CoreStore
from lightspan.store.intake.convert import python_rows
from lightspan.store.intake.ingest import ingest
from lightspan.store.intake.otlp import (
    OtlpDecodeError,
    decode_export_request,
    spans_from_protobuf,
    spans_from_request,
)
from lightspan.store.intake.otlp_depth import cut_too_deep
from lightspan.store.intake.span_row import SpanRow, SpanRowError
from tests.store.interop.sample_spans import sample_request
from tests.store.otlp_payloads import kvs, make_request
from tests.store.raw_otlp import RawRequest


def _rich_request() -> bytes:
    """Spans with every attribute kind, events, links, statuses, duplicate and empty keys."""
    req, _ = make_request(6)
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[1].attributes.extend(kvs({"agentlightning.span_sequence_id": "70"}))
    spans[0].attributes.extend(
        kvs({"kv": {"a": [1, 2], "b": {"c": "d"}}, "m": [1, 2.5], "e": [], "raw": b"\x01\xff"})
    )
    spans[0].attributes.extend([KeyValue(key="empty"), *kvs({"gen_ai.request.model": "other"})])
    spans[1].status.code = 2
    spans[1].status.message = "boom"
    spans[2].parent_span_id = bytes(range(1, 9))
    spans[2].flags = 0x300
    spans[2].trace_state = "a=1,b=2"
    ev = spans[3].events.add()
    ev.name = "tick"
    ev.time_unix_nano = 1_700_000_000_000_000_000
    ev.attributes.extend(kvs({"k": True, "n": 3}))
    link = spans[4].links.add()
    link.trace_id = bytes(range(16))
    link.span_id = bytes(range(8))
    link.attributes.extend(kvs({"why": "follows"}))
    spans[5].span_id = b"\x00" * 8  # rejected: invalid span id
    return req.SerializeToString()


FIXTURE_BODIES = [
    _rich_request(),
    sample_request().SerializeToString(),
    make_request(50)[0].SerializeToString(),
    make_request(3, ids_on="span")[0].SerializeToString(),
    make_request(2, rollout_id=None)[0].SerializeToString(),
    b"",
]
FIXTURE_IDS = ["rich", "sample", "llm", "ids-on-span", "no-owner", "empty"]
"""Request bodies every converter is checked on (here and in test_native_intake.py)."""


def _ld(number: int, body: bytes) -> bytes:
    from tests.store.test_native_intake import _ld as ld

    return ld(number, body)


def _deep_kv(key: str, levels: int = 40) -> bytes:
    from tests.store.test_native_intake import deep_value, raw_kv

    return raw_kv(key, deep_value(levels, "k"))


def _deep_everywhere() -> tuple[bytes, bytes]:
    """Two resources of 4 spans; too-deep values in span 0's attributes, span 1's event, span
    2's link (and a deep event too: the event is found first), and resource 1's attributes.
    Returns the body and the same body with every too-deep value left out."""
    req, _ = make_request(8)
    rs = req.resource_spans[0]
    second = req.resource_spans.add()
    second.resource.CopyFrom(rs.resource)
    second.scope_spans.add().spans.extend(rs.scope_spans[0].spans[4:])
    del rs.scope_spans[0].spans[4:]
    for span in rs.scope_spans[0].spans[1:3]:
        span.events.add(name="ok")
        span.links.add(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)))
    clean = req.SerializeToString()
    raw = RawRequest()
    raw.ParseFromString(clean)
    spans = raw.resource_spans[0].scope_spans[0].spans
    spans[0].attributes.append(_deep_kv("d"))
    spans[1].events.append(_ld(2, b"ev") + _ld(3, _deep_kv("d")))
    spans[2].links.append(_ld(1, bytes(range(1, 17))) + _ld(2, bytes(range(1, 9))))
    spans[2].links.append(_ld(4, _deep_kv("d")))
    spans[2].events.append(_ld(3, _deep_kv("d", 33)))
    raw.resource_spans[1].resource += _ld(1, _deep_kv("r"))
    return raw.SerializeToString(), clean


def test_too_deep_values_reject_only_their_spans_where_protobuf_refuses_the_body() -> None:
    body, clean = _deep_everywhere()
    with pytest.raises(OtlpDecodeError):
        decode_export_request(body)  # protobuf's parser alone refuses the whole request
    got = spans_from_protobuf(body)
    want = spans_from_request(decode_export_request(clean))
    assert [(r.span_id, r.reason) for r in got.rejected] == [
        (
            want.spans[0]["span_id"],
            "a span attribute value nests deeper than 32 levels (the limit)",
        ),
        (
            want.spans[1]["span_id"],
            "a event attribute value nests deeper than 32 levels (the limit)",
        ),
        (
            want.spans[2]["span_id"],
            "a event attribute value nests deeper than 32 levels (the limit)",
        ),
        *(
            (d["span_id"], "a resource attribute value nests deeper than 32 levels (the limit)")
            for d in want.spans[4:]
        ),
    ]
    assert got.spans == want.spans[3:4]
    cut = cut_too_deep(body)
    assert cut is not None and cut[1] == {
        (0, 0, 0): "span",
        (0, 0, 1): "event",
        (0, 0, 2): "event",
        (1,): "resource",
    }


def test_a_body_without_too_deep_values_keeps_the_parsers_error() -> None:
    assert cut_too_deep(make_request(2)[0].SerializeToString()) is None
    with pytest.raises(OtlpDecodeError, match="not a protobuf ExportTraceServiceRequest"):
        spans_from_protobuf(b"\xff\xff\xff")
    req, _ = make_request(1)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="bad").value.string_value = "PLACEHOLDER"
    body = req.SerializeToString().replace(b"PLACEHOLDER", b"\xff\xfe\xfdCEHOLDER")
    with pytest.raises(OtlpDecodeError, match="not a protobuf ExportTraceServiceRequest"):
        spans_from_protobuf(body)


@pytest.mark.parametrize("body", FIXTURE_BODIES, ids=FIXTURE_IDS)
def test_python_rows_are_the_specification_dicts(body: bytes) -> None:
    rows = python_rows(body)
    ref = spans_from_request(decode_export_request(body))
    assert rows.rejected == ref.rejected
    for row, d in zip(rows.rows, ref.spans, strict=True):
        assert row.doc() == SpanRow(d).doc()


def test_span_row_json_is_the_model_json() -> None:
    converted = spans_from_protobuf(_rich_request()).spans
    for d in converted:
        row = SpanRow(dict(d))
        model = Span.model_validate({**d, "sequence_id": d["sequence_id"] or 0})
        if row.sequence_id_pending:
            row.sequence_id = 41
            model.sequence_id = 41
        assert row.doc() == model.model_dump_json()
        assert row.to_span() == model
    nan = {**converted[0], "attributes": {"x": math.nan, "y": math.inf}}
    row = SpanRow(nan)
    row.sequence_id = 7
    assert row.doc() == Span.model_validate({**nan, "sequence_id": 7}).model_dump_json()


def test_span_row_refuses_what_cannot_be_stored() -> None:
    d = spans_from_protobuf(make_request(1)[0].SerializeToString()).spans[0]
    with pytest.raises(SpanRowError, match="rollout_id"):
        SpanRow({**d, "rollout_id": 3})
    with pytest.raises(SpanRowError, match="sequence_id"):
        SpanRow({**d, "sequence_id": -1})
    with pytest.raises(SpanRowError, match="JSON"):
        SpanRow({**d, "attributes": {"o": object()}})


async def _add_models(store: CoreStore, body: bytes) -> tuple[int, int]:
    """The model path: ``Span`` models from the converter's dicts (stored, duplicates)."""
    converted = spans_from_protobuf(body)
    models = [
        Span.model_validate({**d, "sequence_id": d["sequence_id"] or 0}) for d in converted.spans
    ]
    assign = [i for i, d in enumerate(converted.spans) if d["sequence_id"] is None]
    result = await store.add_many_spans(models, assign_sequence_ids=assign)  # type: ignore[call-arg]
    return len(result), sum(1 for o in result.not_stored() if o.status == "duplicate")


async def _stored_docs(store: CoreStore, body: bytes, *, models: bool) -> list[dict[str, Any]]:
    await store.start()
    try:
        for _ in range(2):  # the second export is all duplicates
            if models:
                stored, duplicates = await _add_models(store, body)
            else:
                result = await ingest(store, python_rows(body))
                assert result.rejected == 1
                stored, duplicates = result.stored, result.duplicates
        assert stored == 0 and duplicates == 5
        docs, _ = await store.query_spans_json("ro-test")
        models = await store.query_spans("ro-test")
        assert [m.model_dump_json() for m in models] == docs
        page, total = await store.query_spans_json(
            "ro-test", sort_by="start_time", sort_order="desc", limit=2, offset=1
        )
        filtered, _ = await store.query_spans_json("ro-test", parent_id_contains="0102")
        assert total == 5 and len(page) == 2 and len(filtered) == 1
        return [*docs, *page, *filtered]
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_row_path_stores_what_the_model_path_stores(backend: str, tmp_path: Path) -> None:
    def make(name: str) -> CoreStore:
        if backend == "memory":
            return InMemoryLightningStore()
        return SqliteLightningStore(tmp_path / f"{name}.db")

    body = _rich_request()
    fast = await _stored_docs(make("fast"), body, models=False)
    ref = await _stored_docs(make("ref"), body, models=True)
    assert len(fast) == 8
    assert fast == ref


def test_a_row_from_a_model_stores_the_model_json() -> None:
    """``add_many_spans`` turns ``Span`` models into rows (one write type below it): the row's
    document is the model's JSON, with the issued sequence id when the store issues one."""
    for d in spans_from_protobuf(_rich_request()).spans:
        model = Span.model_validate({**d, "sequence_id": 5})
        row = SpanRow.from_span(model)
        assert not row.sequence_id_pending and row.doc() == model.model_dump_json()
        assert (row.span_id, row.status_code) == (model.span_id, model.status.status_code)
        pending = SpanRow.from_span(model, pending=True)
        assert pending.sequence_id_pending and b'"sequence_id":0,' in pending.doc_bytes()
        pending.sequence_id = 41
        assert pending.doc() == model.model_copy(update={"sequence_id": 41}).model_dump_json()
        assert pending.to_span() == model.model_copy(update={"sequence_id": 41})
