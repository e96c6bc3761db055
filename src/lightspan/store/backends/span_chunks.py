"""How the SQL backends keep spans: one row per stored batch and attempt (a *chunk*), not per span.

Why: a row per span costs SQLite 11-25 us on the machines we measure on (B-tree inserts, three
indexes, ~1.1 KB of JSON per span through the WAL), more than everything else the intake does
once the conversion is native. A chunk row holds a whole batch of one attempt:

* ``cols``: JSON list, one ``[span_id, trace_id, parent_id, name, sequence_id, start_time,
  end_time]`` per span: the fields queries filter and sort on, and the keys for duplicates
  (zstd-compressed too: uncompressed it was twice the size of the compressed documents);
* ``docs``: the spans' stored JSON documents joined by ``\\n`` (compact JSON never holds a raw
  newline), compressed with zstd (level 1: ~1 us per span, ~10x smaller on span JSON).

Reads take a rollout's chunks in insertion order and evaluate the query in memory with
:func:`lightspan.store.api.query.run_query`, the evaluator of the in-memory backend, so filters,
sort order and pagination are the same everywhere by construction.

Duplicates (same rollout, attempt and span id) are found with :class:`SpanKeyCache`: the span ids
of recently written attempts, kept in the store process and brought up to date from the chunks
other processes wrote (``chunk_id`` above the cache's watermark) inside the writing transaction,
after the rollout's row lock (PostgreSQL) or the database's write lock (SQLite) is held. Ids enter
the cache only after their transaction commits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lightspan.store.intake.span_row import SpanRow, chunk_docs

try:  # built with the Rust converter (native/): ~19 bytes per span id instead of ~129
    from lightspan.store.intake._otlp_native import SpanIdSet as _SpanIdSet
except ImportError:  # pragma: no cover - depends on the build
    _SpanIdSet = None

try:
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    _loads: Callable[[str | bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - the store extra installs orjson
    import json

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    _loads = json.loads

__all__ = [
    "CHUNK_COLUMNS",
    "DEFAULT_SPAN_ID_CACHE",
    "EncodedChunk",
    "IdSet",
    "SpanKeyCache",
    "StoredSpan",
    "decode_chunk",
    "decode_docs",
    "encode_chunk",
    "new_id_set",
    "span_field",
]

CHUNK_COLUMNS = (
    "span_id",
    "trace_id",
    "parent_id",
    "name",
    "sequence_id",
    "start_time",
    "end_time",
)
_INDEX = {name: i for i, name in enumerate(CHUNK_COLUMNS)}
_ZSTD_LEVEL = 1
DEFAULT_SPAN_ID_CACHE = 2_000_000 if _SpanIdSet is not None else 250_000
"""Span ids the SQL backends keep in memory for the duplicate check (see :class:`SpanKeyCache`):
~42 MB with the native set (~19-22 bytes an id), ~31 MB with Python sets (~129 bytes)."""

StoredSpan = tuple[str, str, list[Any], str]
"""A span read back: ``(rollout_id, attempt_id, columns, document)``."""

_local = threading.local()


def _zstd() -> tuple[Any, Any]:
    """This thread's zstd compressor and decompressor (the objects are not thread-safe)."""
    pair = getattr(_local, "zstd", None)
    if pair is None:
        try:
            import zstandard
        except ImportError as e:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "the SQL store backends need 'zstandard': pip install 'lightspan[store]'"
            ) from e
        pair = _local.zstd = (
            zstandard.ZstdCompressor(level=_ZSTD_LEVEL),
            zstandard.ZstdDecompressor(),
        )
    return pair


@dataclass(frozen=True, slots=True)
class EncodedChunk:
    """A chunk row's values: the columns JSON, the compressed documents, and the range of
    sequence ids with whether they ascend (reads in sequence order then skip ``cols``)."""

    n: int
    cols: bytes
    docs: bytes
    seq_lo: int
    seq_hi: int
    ordered: bool


def encode_chunk(spans: Sequence[SpanRow]) -> EncodedChunk:
    """The chunk row holding ``spans`` (all of one rollout and attempt, at least one)."""
    compress = _zstd()[0].compress
    rows = [
        [s.span_id, s.trace_id, s.parent_id, s.name, s.sequence_id, s.start_time, s.end_time]
        for s in spans
    ]
    cols = compress(_dumps(rows))
    docs, seq_lo, seq_hi, ordered = chunk_docs(list(spans))
    return EncodedChunk(len(spans), cols, compress(docs), seq_lo, seq_hi, ordered)


def decode_docs(docs: bytes) -> list[str]:
    """The documents of a chunk, without its columns."""
    # One UTF-8 decode for the chunk, then split: ~2x cheaper than decoding span by span.
    return _zstd()[1].decompress(docs).decode().split("\n")


def decode_cols(cols: bytes) -> list[list[Any]]:
    """A chunk's ``cols``: one ``CHUNK_COLUMNS`` list per span."""
    return _loads(_zstd()[1].decompress(cols))


def decode_chunk(rollout_id: str, attempt_id: str, cols: bytes, docs: bytes) -> list[StoredSpan]:
    """The spans of one chunk, in the order they were stored."""
    columns = decode_cols(cols)
    texts = decode_docs(docs) if columns else []
    if len(texts) != len(columns):
        raise ValueError(
            f"span chunk of rollout {rollout_id!r} is damaged: "
            f"{len(columns)} column rows, {len(texts)} documents"
        )
    return [(rollout_id, attempt_id, c, t) for c, t in zip(columns, texts, strict=True)]


def span_field(item: StoredSpan, name: str) -> Any:
    """A field of a stored span, for :func:`~lightspan.store.api.query.run_query`."""
    if name == "rollout_id":
        return item[0]
    if name == "attempt_id":
        return item[1]
    return item[2][_INDEX[name]]


def span_ids_of(cols: bytes) -> Iterable[str]:
    return (c[0] for c in decode_cols(cols))


class IdSet(Protocol):
    """What the duplicate check uses of an attempt's span ids: ``update``, ``in``, ``len``."""

    def update(self, ids: Iterable[str], /) -> None: ...
    def __contains__(self, span_id: object, /) -> bool: ...
    def __len__(self) -> int: ...


def new_id_set() -> IdSet:
    """An empty set of span ids: the native one when built (see ``DEFAULT_SPAN_ID_CACHE``)."""
    return _SpanIdSet() if _SpanIdSet is not None else set()


class SpanKeyCache:
    """Span ids per ``(rollout_id, attempt_id)``, with the highest chunk id they account for.

    Bounded: at most ``max_spans`` ids (whole attempts are evicted, least recently used first;
    an evicted attempt is read back from its chunks the next time it receives spans). An
    attempt's ids are a native ``SpanIdSet`` (an OTLP span id as a 64-bit number: ~19 bytes
    an id) when the Rust converter is built, else a Python ``set`` (~129 bytes: the string and
    the set's slots); the default bound keeps either near 40 MB of the server's memory (the
    soak benchmark found 2,000,000 ids in Python sets, ~230 MB, to be most of the RSS growth
    under sustained ingestion). A miss costs one read of that attempt's chunk columns, so the
    bound must hold the ids of every attempt receiving spans: when those exceed it, the
    attempts evict each other and every batch re-reads its attempts whole (ingestion measured
    13-14x slower, docs/store.md); ``lightspan store serve --span-id-cache`` raises it."""

    def __init__(self, max_spans: int = DEFAULT_SPAN_ID_CACHE) -> None:
        if type(max_spans) is not int or max_spans < 1:
            raise ValueError(f"span_id_cache must be a positive integer, got {max_spans!r}")
        self.max_spans = max_spans
        self._entries: OrderedDict[tuple[str, str], tuple[int, IdSet]] = OrderedDict()
        self._size = 0
        self.ids_reread = 0
        """Span ids read back from the chunks of attempts that were not cached (evicted, or
        written before this process started): it grows about as fast as spans are stored
        when the bound is too small for the attempts receiving spans."""

    def get(self, key: tuple[str, str]) -> tuple[int, IdSet] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def add(self, key: tuple[str, str], watermark: int, ids: Iterable[str]) -> IdSet:
        """Record committed ids of an attempt up to chunk ``watermark`` (the attempt is created
        when new); returns the attempt's whole set. The set is grown in place, and the size
        bound counts the growth."""
        entry = self._entries.pop(key, None)
        known = entry[1] if entry is not None else new_id_set()
        before = len(known)
        known.update(ids)
        self._size += len(known) - before
        if entry is None:
            self.ids_reread += len(known)
        self._entries[key] = (max(watermark, entry[0]) if entry is not None else watermark, known)
        self._evict()
        return known

    def merge(self, key: tuple[str, str], watermark: int, ids: Iterable[str]) -> None:
        """Add the ids of a committed chunk (``watermark``: its id) to a cached attempt. Correct
        because chunks of one attempt are written one transaction at a time (the rollout's
        lock), so no other chunk of it lies between the cached watermark and this one."""
        entry = self._entries.get(key)
        if entry is None or entry[0] >= watermark:
            # Not cached (it is read from the chunks when needed), or already newer.
            return
        self.add(key, watermark, ids)

    def _evict(self) -> None:
        while self._size > self.max_spans and len(self._entries) > 1:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._size -= len(evicted)

    def clear(self) -> None:
        self._entries.clear()
        self._size = 0

    def __len__(self) -> int:
        return self._size
