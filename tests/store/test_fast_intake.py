"""The intake's fast paths agree with the reference paths they replace.

``otlp.spans_from_protobuf`` (shadow protobuf types, memoised attributes) must give exactly the
Span dicts of ``spans_from_request(decode_export_request(body))``, and spans stored through
``SpanRow`` (no pydantic models) must be stored as exactly the JSON the model path stores.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from lightspan.store.core import CoreStore
from lightspan.store.intake import ingest_span_dicts
from lightspan.store.memory import InMemoryLightningStore
from lightspan.store.models import Span
from lightspan.store.otlp import (
    OtlpDecodeError,
    decode_export_request,
    spans_from_protobuf,
    spans_from_request,
)
from lightspan.store.span_row import SpanRow, SpanRowError
from lightspan.store.sqlite import SqliteLightningStore
from tests.store.interop.sample_spans import sample_request
from tests.store.otlp_payloads import kvs, make_request


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


@pytest.mark.parametrize("body", FIXTURE_BODIES, ids=FIXTURE_IDS)
def test_protobuf_fast_path_equals_reference_path(body: bytes) -> None:
    for _ in range(2):  # the second time, attributes come from the memo
        fast = spans_from_protobuf(body)
        ref = spans_from_request(decode_export_request(body))
        assert fast.spans == ref.spans
        assert [list(d["attributes"]) for d in fast.spans] == [
            list(d["attributes"]) for d in ref.spans
        ]
        assert fast.rejected == ref.rejected


def test_protobuf_fast_path_rejects_what_the_real_parser_rejects() -> None:
    with pytest.raises(OtlpDecodeError, match="not a protobuf ExportTraceServiceRequest"):
        spans_from_protobuf(b"\xff\xff\xff")
    req, _ = make_request(1)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="bad").value.string_value = "PLACEHOLDER"
    body = req.SerializeToString().replace(b"PLACEHOLDER", b"\xff\xfe\xfdCEHOLDER")
    with pytest.raises(OtlpDecodeError):
        decode_export_request(body)
    with pytest.raises(OtlpDecodeError, match="malformed attribute"):
        spans_from_protobuf(body)


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


async def _stored_docs(store: CoreStore, body: bytes, *, validate: bool) -> list[dict[str, Any]]:
    await store.start()
    try:
        for _ in range(2):  # the second export is all duplicates
            result = await ingest_span_dicts(store, spans_from_protobuf(body), validate=validate)
        assert result.stored == 0 and result.duplicates == 5 and result.rejected == 1
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
    fast = await _stored_docs(make("fast"), body, validate=False)
    ref = await _stored_docs(make("ref"), body, validate=True)
    assert len(fast) == 8
    assert fast == ref
