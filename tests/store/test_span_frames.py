"""The compact span page (``span_frames.py``): our client reads the same spans through it as
through JSON, on every backend, for whole reads, pages that cut stored chunks and filtered or
re-sorted queries; clients that do not ask for it get JSON; a damaged page is refused."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from lightspan.store.api import span_frames
from lightspan.store.api.client import LightningStoreClient
from lightspan.store.api.models import PaginatedResult, Span
from tests.store.otlp_payloads import make_request
from tests.store.servers import StoreProcess

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path) -> Iterator[StoreProcess]:
    backend = request.param
    db = None
    if backend == "sqlite":
        db = str(tmp_path / "store.db")
    elif backend == "postgres":
        db = request.getfixturevalue("postgres_db_dsn")
    proc = StoreProcess(backend, db=db).start()
    yield proc
    assert proc.stop() == 0, proc.log()[-2000:]


def _batch(rollout_id: str, attempt_id: str, n: int, ids_on: str) -> bytes:
    """``n`` spans; some with events and links, so those models are built too."""
    req, _ = make_request(n, rollout_id=rollout_id, attempt_id=attempt_id, ids_on=ids_on)
    spans = req.resource_spans[0].scope_spans[0].spans
    for i in range(0, n, 7):
        ev = spans[i].events.add()
        ev.name, ev.time_unix_nano = "retry", spans[i].start_time_unix_nano
        link = spans[i].links.add()
        link.trace_id, link.span_id = os.urandom(16), os.urandom(8)
    return req.SerializeToString()


def _same(a: PaginatedResult[Span], b: PaginatedResult[Span]) -> None:
    assert (a.total, a.limit, a.offset) == (b.total, b.limit, b.offset)
    assert a.items == b.items
    assert [s.model_dump() for s in a.items] == [s.model_dump() for s in b.items]
    for x, y in zip(a.items, b.items, strict=True):
        assert type(x) is type(y) is Span
        assert x.model_fields_set == y.model_fields_set
        assert x.model_extra == y.model_extra
        assert type(x.status) is type(y.status) and type(x.resource) is type(y.resource)
        assert [type(e) for e in x.events] == [type(e) for e in y.events]
        assert [type(k.context) for k in x.links] == [type(k.context) for k in y.links]


async def test_both_formats_read_the_same_spans(server: StoreProcess) -> None:
    rid = "ro-frames"
    assert span_frames.available()  # else both clients below would read JSON
    async with LightningStoreClient(server.address) as ours:
        assert ours.compact_span_pages
        await ours.start_rollout(input={"q": 1})  # another rollout, so reads must filter
        # chunks of 300, 520 and 45 spans in two attempts (SQL: one chunk per batch)
        for attempt, n, ids_on in (("at-1", 300, "resource"), ("at-1", 520, "span")):
            assert (await ours.export_otlp(_batch(rid, attempt, n, ids_on)))[0] == 0
        second = await ours.start_attempt(rid)
        aid = second.attempt.attempt_id
        assert (await ours.export_otlp(_batch(rid, aid, 45, "resource")))[0] == 0
        extra = Span.build(rollout_id=rid, attempt_id=aid, sequence_id=10_000, name="extra")
        extra = Span.model_validate({**extra.model_dump(), "producer_field": {"kept": True}})
        assert await ours.add_span(extra) is not None

        plain = LightningStoreClient(server.address)
        plain.compact_span_pages = False
        try:
            queries = [
                {},
                {"limit": 700, "offset": 3},  # cuts the first and the second chunk
                {"limit": 10, "offset": 600},  # inside one chunk
                {"limit": 5, "offset": 10_000},  # past the end
                {"attempt_id": "latest"},
                {"attempt_id": "at-1", "limit": 50, "offset": 290},
                {"name_contains": "extra"},  # filtered: not the stored-chunk path
                {"sort_order": "desc", "limit": 30},
                {"sort_by": "start_time", "offset": 5},
            ]
            for kw in queries:
                compact = await ours.query_spans(rid, **kw)
                _same(compact, await plain.query_spans(rid, **kw))
            whole = await ours.query_spans(rid)
            assert whole.total == len(whole.items) == 866
            assert whole.items[-1].model_extra == {"producer_field": {"kept": True}}
            assert sum(len(s.events) for s in whole.items) > 0
        finally:
            await plain.close()

    body = {"rollout_id": rid, "limit": -1, "offset": 0}
    accept = {"accept": f"{span_frames.MEDIA_TYPE}, application/json;q=0.9"}
    async with httpx.AsyncClient(base_url=server.address + "/v1/agl", timeout=30) as http:
        compact_answer = await http.post("/spans/search", json=body, headers=accept)
        json_answer = await http.post("/spans/search", json=body)  # what Agent Lightning sends
    assert compact_answer.headers["content-type"] == span_frames.MEDIA_TYPE
    assert json_answer.headers["content-type"] == "application/json"
    assert json_answer.json()["total"] == 866
    assert len(compact_answer.content) < len(json_answer.content) / 3


def _compact(n: int) -> bytes:
    docs = [
        Span.build(rollout_id="ro-1", attempt_id="at-1", sequence_id=i, name=f"s{i}")
        .model_dump_json()
        .encode()
        for i in range(n)
    ]
    frames = [span_frames.compress_docs(docs[:2]), span_frames.compress_docs(docs[2:])]
    return span_frames.encode_frames(frames, n, -1, 0, n)


def test_damaged_compact_pages_are_refused() -> None:
    from lightspan.store.api.span_page import decode_frames_page

    good = _compact(5)
    page = decode_frames_page(good)
    assert [s.sequence_id for s in page] == [0, 1, 2, 3, 4] and page.total == 5
    head, frames = good.split(b"\n", 1)
    for bad, message in (
        (good[:-3], "declared"),
        (frames, "header"),
        (head.replace(b'"count":5', b'"count":6') + b"\n" + frames, "declares 6 spans, holds 5"),
        (head + b"\n" + frames[:-8] + b"\x00" * 8, "damaged frame"),
    ):
        with pytest.raises(ValueError, match=message):
            decode_frames_page(bad)


def test_documents_with_unexpected_shapes_are_validated() -> None:
    """A document that is not exactly a stored span goes through pydantic (and is refused
    with the field named when it is wrong)."""
    from pydantic import ValidationError

    from lightspan.store.api.span_page import build_spans

    good = Span.build(rollout_id="ro-1", attempt_id="at-1", sequence_id=1, name="s")
    doc = good.model_dump()
    [same] = build_spans([dict(doc)])
    assert same == good and same.model_fields_set == good.model_fields_set
    no_events = {k: v for k, v in doc.items() if k != "events"}
    for broken, field in (
        ({**doc, "status": {"status_code": "BROKEN"}}, "status"),
        (no_events, "events"),
    ):
        with pytest.raises(ValidationError, match=field):
            build_spans([broken])
