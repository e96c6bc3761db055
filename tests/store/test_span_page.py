"""The client's span-page decoding: every span validated, the collector paused only while
decoding and left as the caller had it."""

from __future__ import annotations

import gc
import json

import pytest
from pydantic import ValidationError

from lightspan.store.api.models import Span
from lightspan.store.api.span_page import decode_span_page, gc_paused


def _page(n: int) -> bytes:
    items = [
        Span.build(rollout_id="ro-1", attempt_id="at-1", sequence_id=i, name=f"s{i}").model_dump(
            mode="json"
        )
        for i in range(n)
    ]
    return json.dumps({"items": items, "limit": -1, "offset": 0, "total": n}).encode()


def test_decodes_and_validates_every_span() -> None:
    page = decode_span_page(_page(3))
    assert [s.sequence_id for s in page] == [0, 1, 2]
    assert isinstance(page.items[0], Span) and page.items[0].context is not None
    bad = json.loads(_page(2))
    del bad["items"][1]["trace_id"]
    with pytest.raises(ValidationError, match="trace_id"):
        decode_span_page(json.dumps(bad).encode())
    assert gc.isenabled()  # restored after a failure too


def test_gc_paused_inside_restored_after() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_gc_left_disabled_when_the_caller_disabled_it() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_errors_are_validation_errors_located_in_the_page() -> None:
    for bad in (
        {"status": {"status_code": "BROKEN", "description": None}},
        {"context": {"trace_id": "t", "span_id": "s", "is_remote": "maybe", "trace_state": {}}},
        {"resource": {"attributes": [], "schema_url": ""}},
        {"sequence_id": None},
    ):
        page = json.loads(_page(3))
        page["items"][2].update(bad)
        with pytest.raises(ValidationError, match=r"items\.2"):
            decode_span_page(json.dumps(page).encode())
    with pytest.raises(ValidationError):
        decode_span_page(b'{"items": [], "limit": "x", "offset": 0, "total": 0}')
    with pytest.raises(ValidationError):
        decode_span_page(b"not json")
    assert gc.isenabled()


def test_decoded_objects_join_the_old_generation_and_nothing_stays_frozen() -> None:
    gc.collect()
    page = decode_span_page(_page(50))
    assert gc.isenabled() and gc.get_freeze_count() == 0
    oldest = gc.get_objects(generation=2)
    assert any(o is page.items[-1] for o in oldest)  # not left for a young collection to walk


def test_objects_the_application_froze_stay_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        decode_span_page(_page(5))
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
