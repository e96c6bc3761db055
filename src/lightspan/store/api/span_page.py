"""Decoding a page of spans in the client, with the cyclic garbage collector paused.

Why pause the collector: a 10,000-span page becomes ~160,000 new container objects (each
span's dicts, its nested models). While they are being built, CPython's generational collector
runs again and again over the growing set of young objects (and, as they are promoted, over the
older generations), which is most of the cost: on a 12.6 MB page of realistic spans,
validation took 240-480 ms with the collector running and 190-210 ms with it paused, including
the one collection of the new objects that follows when it is enabled again (same process;
``benchmarks/store_read.py`` measures the end-to-end effect). Nothing is cyclic garbage while the
page is decoded, so pausing loses nothing; the collector runs as usual afterwards.

Tried and dropped for JSON pages (which may come from a foreign server): building the models
directly from ``orjson`` output after exact-shape type checks (falling back to pydantic
otherwise) was no faster than ``validate_json`` once the checks were in (193 vs 196 ms on that
page), so their validation stays pydantic's alone.

The pause is process-wide (``gc.disable``) and brief; it is only lifted by the call that set it,
so a caller that disabled the collector itself keeps it disabled, and two pages decoded at once
in different threads leave it enabled when the first one finishes.

A JSON page is validated span by span (``TypeAdapter.validate_json``, straight from the response
bytes with pydantic-core's parser): the client talks to foreign servers too (Agent Lightning's).

A compact page (``span_frames.py``) is only ever written by our server, from documents it
serialised from validated ``Span`` models, so :func:`build_spans` skips re-validating the
values: it checks each span's keys and counts those of its nested objects (a span or object of
another shape goes through pydantic instead), and builds the models as pydantic's own validator
leaves them (``__dict__``, every field in ``model_fields_set``, no extras, no private state), so
they compare equal to validated ones. The documents are parsed by ``orjson`` when installed
(the ``client`` extra), else by pydantic-core's parser: ~10 % slower here, as was pydantic-core's
with every string cached (``cache_strings="all"``). Measured end to end
(``benchmarks/store_read.py``, docs/store.md "Reads, end to end"): 75.9 ms of client CPU for
10,000 realistic spans, against 239.5 ms through the validated JSON page before.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pydantic_core
from pydantic import BaseModel, TypeAdapter

try:
    from orjson import loads as _parse
except ImportError:  # the ``client`` and ``store`` extras install it

    def _parse(data: bytes) -> Any:
        return pydantic_core.from_json(data, cache_strings="keys")


from lightspan.store.api.models import (
    Event,
    Link,
    OtelResource,
    PaginatedResult,
    Span,
    SpanContext,
    TraceStatus,
)
from lightspan.store.api.span_frames import decode_frames

__all__ = ["build_spans", "decode_frames_page", "decode_span_page", "gc_paused"]

_SPAN_PAGE = TypeAdapter(PaginatedResult[Span])


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (see the module doc); the objects
    made meanwhile then join the oldest generation (see :func:`_promote_young`)."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            _promote_young()
            gc.enable()


def _promote_young() -> None:
    """Move the young generations into the oldest one, without a collection.

    Why: once the collector runs again, its first young collection walks every object of the
    new page (~160,000 tracked objects for 10,000 spans): measured 43-72 ms of a ~160 ms read
    in the client. The page is long-lived data its caller holds, where that walk would move it
    anyway. ``gc.freeze()`` + ``gc.unfreeze()`` is that move (two list splices): other young
    objects of the process move too, so cyclic garbage among them waits for the next full
    collection instead of the next young one. Skipped when the application froze objects
    itself (``unfreeze`` would release those as well)."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def decode_span_page(content: bytes) -> PaginatedResult[Span]:
    """A ``PaginatedResult[Span]`` validated from a response body; raises
    ``pydantic.ValidationError`` on a body that is not a span page."""
    with gc_paused():
        return _SPAN_PAGE.validate_json(content)


_new = object.__new__
_set_dict = object.__setattr__
_set_fields = BaseModel.__pydantic_fields_set__.__set__  # type: ignore[attr-defined]
_set_extra = BaseModel.__pydantic_extra__.__set__  # type: ignore[attr-defined]
_set_private = BaseModel.__pydantic_private__.__set__  # type: ignore[attr-defined]


def _builder(cls: type[BaseModel]) -> Any:
    """A function dict -> ``cls`` instance for the nested objects of a span document.

    Their keys are counted, not compared (~20 % of the build time): our server writes every
    field of these models, and an extra key, the only other shape it writes, changes the
    count; any other count goes through pydantic."""
    n = len(cls.model_fields)
    fields_copy = set(cls.model_fields).copy
    validate = cls.model_validate

    def build(d: Any) -> Any:
        if type(d) is not dict or len(d) != n:
            return validate(d)
        m = _new(cls)
        _set_dict(m, "__dict__", d)
        _set_fields(m, fields_copy())
        _set_extra(m, {})
        _set_private(m, None)
        return m

    return build


_span, _status, _context, _resource, _event, _link = map(
    _builder, (Span, TraceStatus, SpanContext, OtelResource, Event, Link)
)
_SPAN_KEYS = frozenset(Span.model_fields)


def _link_of(d: Any) -> Any:
    if type(d) is dict and len(d) == len(Link.model_fields) and type(d.get("context")) is dict:
        d["context"] = _context(d["context"])
    return _link(d)


def build_spans(items: list[Any]) -> list[Span]:
    """``Span`` models from the parsed documents of a compact page (see the module doc); the
    dicts are reused as the models' ``__dict__``."""
    out: list[Span] = []
    append = out.append
    for d in items:
        if type(d) is not dict or d.keys() != _SPAN_KEYS:
            append(Span.model_validate(d))
            continue
        d["status"] = _status(d["status"])
        if d["context"] is not None:
            d["context"] = _context(d["context"])
        if d["parent"] is not None:
            d["parent"] = _context(d["parent"])
        d["resource"] = _resource(d["resource"])
        if d["events"]:
            d["events"] = [_event(e) for e in d["events"]]
        if d["links"]:
            d["links"] = [_link_of(k) for k in d["links"]]
        append(_span(d))
    return out


def decode_frames_page(content: bytes) -> PaginatedResult[Span]:
    """A ``PaginatedResult[Span]`` from a compact page (``span_frames.py``) of our server;
    raises ``ValueError`` on a damaged page."""
    page = decode_frames(content)
    spans: list[Span] = []
    with gc_paused():
        for array in page.arrays():
            items = _parse(array)
            if type(items) is not list:
                raise ValueError("compact span page frame is not a list of span documents")
            spans += build_spans(items)
    if len(spans) != page.count:
        raise ValueError(f"compact span page declares {page.count} spans, holds {len(spans)}")
    return PaginatedResult[Span].model_construct(
        items=spans, limit=page.limit, offset=page.offset, total=page.total
    )
