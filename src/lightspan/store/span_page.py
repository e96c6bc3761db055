"""Decoding a page of spans in the client, with the cyclic garbage collector paused.

Why pause the collector: a 10,000-span page becomes ~160,000 new container objects (each
span's dicts, its nested models). While they are being built, CPython's generational collector
runs again and again over the growing set of young objects (and, as they are promoted, over the
older generations), which is most of the cost: on a 12.6 MB page of realistic spans,
validation took 240-480 ms with the collector running and 190-210 ms with it paused, including
the one collection of the new objects that follows when it is enabled again (same process;
``benchmarks/store_read.py`` measures the end-to-end effect). Nothing is cyclic garbage while the
page is decoded, so pausing loses nothing; the collector runs as usual afterwards.

Tried and dropped: building the models directly from ``orjson`` output after exact-shape type
checks (falling back to pydantic otherwise) was no faster than ``validate_json`` once the checks
were in (193 vs 196 ms on that page), so validation stays pydantic's alone.

The pause is process-wide (``gc.disable``) and brief; it is only lifted by the call that set it,
so a caller that disabled the collector itself keeps it disabled, and two pages decoded at once
in different threads leave it enabled when the first one finishes.

Every span is still validated (``TypeAdapter.validate_json``, straight from the response bytes
with pydantic-core's parser): the client talks to foreign servers too (Agent Lightning's).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import TypeAdapter

from .models import PaginatedResult, Span

__all__ = ["decode_span_page", "gc_paused"]

_SPAN_PAGE = TypeAdapter(PaginatedResult[Span])


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (see the module doc)."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def decode_span_page(content: bytes) -> PaginatedResult[Span]:
    """A ``PaginatedResult[Span]`` validated from a response body; raises
    ``pydantic.ValidationError`` on a body that is not a span page."""
    with gc_paused():
        return _SPAN_PAGE.validate_json(content)
