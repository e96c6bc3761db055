"""The one type a span has on its way into a backend: :class:`SpanRow`, its stored JSON and the
few fields the store's rules read.

Everything below ``add_many_spans`` (the store's rules in ``core.py``, ``lifecycle.py``, the
backends' ``insert_spans``, chunk encoding) sees only rows. Rows come from the OTLP conversion
(``convert.py``: the Rust converter's tuples or the Python converter's dicts) or, for callers
that pass ``Span`` models to ``add_span``/``add_many_spans`` (REST ``POST /spans``, the
reference client's API), from :meth:`SpanRow.from_span` at the entry of ``add_many_spans``.

Why: the OTLP converter (``otlp.py``) already builds well-formed Span dicts (ids checked, status
codes from a fixed table, attribute values primitives or lists of primitives), so validating them
again into ``Span`` models costs ~15-30 us per span and can only fail where serialisation fails
too. A :class:`SpanRow` keeps the dict, the few fields the store's rules read, and the stored
JSON, serialised once here by orjson (or pydantic-core's serializer without it): what
``Span.model_dump_json()`` writes for the same span (compact, UTF-8, NaN/inf as ``null``).

The sequence id is usually issued by the store inside the transaction that stores the span
(``sequence_id_pending``): the JSON then carries ``"sequence_id":null`` and :meth:`SpanRow.doc`
splices the issued id in. The first occurrence of that text in the document is the key's own: it
comes after only ``rollout_id`` and ``attempt_id``, and a quote inside a JSON string is escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from pydantic_core import PydanticSerializationError, to_json

try:
    from orjson import dumps as _orjson_dumps
except ImportError:  # optional: the ``store`` extra installs it
    _orjson_dumps = None

from lightspan.store.api.models import Span

try:  # built with the Rust converter (native/) by `pip install` when cargo is available
    from lightspan.store.intake._otlp_native import chunk_docs as _native_chunk_docs
except ImportError:
    _native_chunk_docs = None

__all__ = ["RowGroup", "RowGroups", "SpanRow", "SpanRowError", "chunk_docs", "group_rows"]

_PENDING = b'"sequence_id":null'
_SEQUENCE = re.compile(rb'"sequence_id":-?[0-9]+')


def _dumps(data: dict[str, Any]) -> bytes:
    """Span JSON: orjson when installed (~3x faster), else pydantic-core; both write what
    ``model_dump_json`` writes (compact, UTF-8, NaN/inf as ``null``). orjson refuses some
    values pydantic-core takes (integers beyond 64 bits): those go to pydantic-core."""
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(data)
        except TypeError:
            pass
    try:
        return to_json(data, inf_nan_mode="null")
    except (PydanticSerializationError, ValueError, TypeError) as exc:
        raise SpanRowError(f"span cannot be stored as JSON: {exc}") from exc


def _type_problem(data: dict[str, Any]) -> str:
    for key in ("rollout_id", "attempt_id", "span_id", "trace_id", "name"):
        if type(data[key]) is not str:
            return f"{key}: expected a string, got {type(data[key]).__name__}"
    return f"sequence_id: expected a non-negative integer, got {data['sequence_id']!r}"


class SpanRowError(ValueError):
    """A converted span that cannot be stored (its JSON cannot be written); the message says why."""


class SpanRow:
    """One span to store: its stored JSON and the fields the store reads.

    It keeps no reference to the Span dict it was made from: the dicts of a batch (~10
    containers per span) can be freed right away instead of living, and being traversed by the
    cyclic garbage collector, until the batch is committed."""

    __slots__ = (
        "_doc",
        "_span",
        "attempt_id",
        "end_time",
        "name",
        "parent_id",
        "rollout_id",
        "sequence_id",
        "sequence_id_pending",
        "span_id",
        "start_time",
        "status_code",
        "trace_id",
    )

    def __init__(self, data: dict[str, Any]) -> None:
        """``data`` is a Span dict from ``otlp.py``; ``sequence_id`` ``None`` means "issue one".

        Raises :class:`SpanRowError` when a field has the wrong type or the span cannot be
        written as JSON (only possible for hand-made dicts or exotic SDK attribute values).
        """
        seq = data["sequence_id"]
        self.sequence_id_pending = seq is None
        self.sequence_id: int = 0 if seq is None else seq
        self.rollout_id: str = data["rollout_id"]
        self.attempt_id: str = data["attempt_id"]
        self.span_id: str = data["span_id"]
        self.trace_id: str = data["trace_id"]
        self.parent_id: str | None = data["parent_id"]
        self.name: str = data["name"]
        self.start_time: float | None = data["start_time"]
        self.end_time: float | None = data["end_time"]
        self.status_code: str = data["status"]["status_code"]
        if not (
            type(self.rollout_id) is str
            and type(self.attempt_id) is str
            and type(self.span_id) is str
            and type(self.trace_id) is str
            and type(self.name) is str
            and (seq is None or (type(seq) is int and seq >= 0))
        ):
            raise SpanRowError(_type_problem(data))
        self._doc = _dumps(data)
        self._span: Span | None = None

    @classmethod
    def from_native(cls, fields: tuple[Any, ...]) -> SpanRow:
        """A row from the Rust converter's tuple (see ``native/src/lib.rs``): the same fields
        and the same JSON that ``SpanRow(dict)`` makes for the same span."""
        self = object.__new__(cls)
        (
            self.rollout_id,
            self.attempt_id,
            self.span_id,
            self.trace_id,
            self.parent_id,
            self.name,
            self.start_time,
            self.end_time,
            self.status_code,
            seq,
            self._doc,
        ) = fields
        self.sequence_id_pending = seq is None
        self.sequence_id = 0 if seq is None else seq
        self._span = None
        return self

    @classmethod
    def from_span(cls, span: Span, *, pending: bool = False) -> SpanRow:
        """A row from a ``Span`` model; ``pending``: the store issues its sequence id (the JSON
        then carries the ``"sequence_id":null`` placeholder, as the converters write it)."""
        self = object.__new__(cls)
        self.rollout_id = span.rollout_id
        self.attempt_id = span.attempt_id
        self.span_id = span.span_id
        self.trace_id = span.trace_id
        self.parent_id = span.parent_id
        self.name = span.name
        self.start_time = span.start_time
        self.end_time = span.end_time
        self.status_code = span.status.status_code
        self.sequence_id_pending = pending
        self.sequence_id = 0 if pending else span.sequence_id
        doc = span.model_dump_json().encode()
        if pending:  # the key's own: it follows only rollout_id and attempt_id
            doc = _SEQUENCE.sub(_PENDING, doc, count=1)
        self._doc = doc
        self._span = None
        return self

    def doc(self) -> str:
        """The stored JSON, with the sequence id the store issued."""
        return self.doc_bytes().decode()

    def doc_bytes(self) -> bytes:
        """:meth:`doc` as UTF-8 bytes (what the SQL backends store)."""
        if self.sequence_id_pending:
            return self._doc.replace(_PENDING, b'"sequence_id":%d' % self.sequence_id, 1)
        return self._doc

    def to_span(self) -> Span:
        """The pydantic model (what ``query_spans`` and ``add_span`` return); built once per
        row, on the first call after the row was stored."""
        if self._span is None or self._span.sequence_id != self.sequence_id:
            self._span = Span.model_validate_json(self.doc())
        return self._span


def chunk_docs(rows: list[SpanRow]) -> tuple[bytes, int, int, bool]:
    """A chunk's documents and sequence ids: ``(docs, lowest, highest, ascending)``, ``docs``
    being ``b"\\n".join(row.doc_bytes() for row in rows)``. One Rust pass over the rows when the
    module is built (no per-span ``bytes.replace``, no list per field), else exactly that in
    Python (also for a sequence id beyond 64 bits, which the Rust pass refuses)."""
    if _native_chunk_docs is not None:
        try:
            return _native_chunk_docs(rows)
        except OverflowError:
            pass
    seqs = [r.sequence_id for r in rows]
    ascending = all(a <= b for a, b in pairwise(seqs))
    return b"\n".join([r.doc_bytes() for r in rows]), min(seqs), max(seqs), ascending


@dataclass(slots=True)
class RowGroup:
    """The rows of one attempt in a batch: what the store's rules read per attempt."""

    indices: list[int]
    """Positions in the batch, in arrival order."""
    pending: int
    """How many of them wait for the store to issue their sequence id."""
    max_carried: int | None
    """The highest sequence id the others carry (``None`` when every row is pending)."""


@dataclass(slots=True)
class RowGroups:
    """A batch of rows per ``(rollout_id, attempt_id)``, in the order the attempts first appear.

    Why: the store applies its rules per attempt (lookups, sequence ids, one chunk each), and
    its own passes over every row's fields to group them were ~2 M of a 512-span request's 33 M
    instructions (``benchmarks/intake_inprocess.py --instructions``); the Rust converter hands
    the grouping over with the rows (its ``convert``), other rows are grouped by
    :func:`group_rows`."""

    groups: dict[tuple[str, str], RowGroup]
    clean: bool
    """Every row names its rollout and attempt, and no span id comes twice in an attempt: the
    common batch, stored as it is (otherwise the store sorts the rows out first)."""

    @classmethod
    def from_native(
        cls, raw: list[tuple[str, str, list[int], int, int | None]], clean: bool
    ) -> RowGroups:
        """From the Rust converter's ``(rollout_id, attempt_id, indices, pending, max_carried)``."""
        return cls({(r, a): RowGroup(i, p, m) for r, a, i, p, m in raw}, clean)


def group_rows(rows: list[SpanRow], indices: Iterable[int] | None = None) -> RowGroups:
    """``rows`` (or those at ``indices``) per attempt: what the Rust converter computes for the
    rows it makes (``tests/store/test_native_intake.py`` holds the two to the same result)."""
    groups: dict[tuple[str, str], RowGroup] = {}
    seen: set[tuple[str, str, str]] = set()
    clean = True
    for i in range(len(rows)) if indices is None else indices:
        row = rows[i]
        key = (row.rollout_id, row.attempt_id)
        group = groups.get(key)
        if group is None:
            group = groups[key] = RowGroup([], 0, None)
        span_key = (*key, row.span_id)
        if not (key[0] and key[1]) or span_key in seen:
            clean = False
        seen.add(span_key)
        group.indices.append(i)
        if row.sequence_id_pending:
            group.pending += 1
        elif group.max_carried is None or row.sequence_id > group.max_carried:
            group.max_carried = row.sequence_id
    return RowGroups(groups, clean)
