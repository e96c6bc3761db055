"""The one conversion: an OTLP/protobuf export body -> span rows to store, and rejected spans.

Everything that reaches the store's intake arrives here as OTLP/protobuf bytes: OTLP/HTTP and
OTLP/gRPC bodies, OTLP/JSON bodies once parsed to protobuf (:func:`json_to_protobuf`), the runner
exchange's spans, and the in-process exporter's batches (it hands over the bytes its
``SpanEncoder`` writes, byte for byte what the SDK's encoder writes). So one function decides
what a span becomes, whichever way it travelled.

Two implementations of it, one result: the Rust converter (``native/``, the ``_otlp_native``
module built by ``pip install`` when cargo is there) is the fast path; ``otlp.py`` over the real
OTLP protobuf classes is the specification and the fallback (module not built, switched off with
``LIGHTSPAN_NATIVE_INTAKE=0``, or a batch the Rust side hands back). ``tests/store/
test_native_intake.py`` checks that both give the same columns and byte-identical JSON.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from lightspan.store.intake.otlp import (
    OtlpSpans,
    RejectedSpan,
    request_from_json,
    spans_from_protobuf,
)
from lightspan.store.intake.span_row import RowGroups, SpanRow, SpanRowError

try:  # the Rust conversion (native/), built by `pip install` when cargo is available
    from lightspan.store.intake._otlp_native import convert as _native_convert
except ImportError:
    _native_convert = None

__all__ = [
    "NATIVE_INTAKE_ENV",
    "OFFLOAD_BYTES",
    "Converted",
    "convert",
    "convert_async",
    "json_to_protobuf",
    "native_intake",
    "native_rows",
    "python_rows",
]

NATIVE_INTAKE_ENV = "LIGHTSPAN_NATIVE_INTAKE"
"""Set to ``0`` to convert OTLP requests in Python even when the Rust module is built."""


@dataclass(slots=True)
class Converted:
    """The spans of one export body: rows to store, and spans that cannot be stored (reported
    in OTLP ``partial_success``)."""

    rows: list[SpanRow] = field(default_factory=list)
    rejected: list[RejectedSpan] = field(default_factory=list)
    groups: RowGroups | None = None
    """The rows per attempt when the converter computed them (the Rust one does; the store
    groups the others itself, with ``span_row.group_rows``)."""


def native_intake() -> bool:
    """Whether bodies are converted by the Rust module: it is built and not switched off with
    ``LIGHTSPAN_NATIVE_INTAKE=0``."""
    if _native_convert is None:
        return False
    return os.environ.get(NATIVE_INTAKE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def native_rows(body: bytes) -> Converted | None:
    """The Rust converter's rows, or ``None`` when the Python converter must convert the body:
    the module is not built or is switched off, the body does not decode (Python's parser then
    gives the authoritative error), or the batch holds values whose conversion follows Python's
    own ``str()``/``int()`` (a non-string rollout id, a sequence id like ``"1_000"``)."""
    if not native_intake():
        return None
    try:
        out = _native_convert(body)  # type: ignore[misc]
    except ValueError:
        return None
    if out is None:
        return None
    raw_rows, raw_rejected, raw_groups, clean = out
    from_native = SpanRow.from_native
    return Converted(
        [from_native(t) for t in raw_rows],
        [RejectedSpan(*r) for r in raw_rejected],
        RowGroups.from_native(raw_groups, clean),
    )


def python_rows(body: bytes) -> Converted:
    """The specification's rows (``otlp.py``). Raises ``OtlpDecodeError`` for a malformed body."""
    return rows_from_dicts(spans_from_protobuf(body))


def rows_from_dicts(converted: OtlpSpans) -> Converted:
    """Span dicts from ``otlp.py`` -> rows; a span whose JSON cannot be written is rejected.
    Consumes ``converted.spans`` (the dicts are not needed once the rows hold their JSON)."""
    out = Converted(rejected=list(converted.rejected))
    dicts, converted.spans = converted.spans, []
    for d in dicts:
        try:
            out.rows.append(SpanRow(d))
        except SpanRowError as exc:
            out.rejected.append(RejectedSpan(str(d.get("span_id")), str(d.get("name")), str(exc)))
    dicts.clear()
    return out


def convert(body: bytes) -> Converted:
    """An OTLP/protobuf ExportTraceServiceRequest body -> rows and rejections: the Rust converter
    when it takes the body, else the Python one. Raises ``otlp.OtlpDecodeError`` for a body that
    is not a valid request."""
    native = native_rows(body)
    if native is not None:
        return native
    return python_rows(body)


def json_to_protobuf(body: bytes | str) -> bytes:
    """An OTLP/JSON body -> the same request as OTLP/protobuf bytes (for :func:`convert`).
    Raises ``otlp.OtlpDecodeError`` naming the problem."""
    return request_from_json(body).SerializeToString()


OFFLOAD_BYTES = 32 * 1024
"""Bodies at least this large are converted on the conversion thread (see
:func:`convert_async`); smaller ones cost less inline than a thread hop (~50 us)."""

_convert_pool: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _convert_pool
    if _convert_pool is None:
        _convert_pool = ThreadPoolExecutor(1, thread_name_prefix="lightspan-otlp-convert")
    return _convert_pool


async def convert_async(body: bytes) -> Converted:
    """:func:`convert` off the event loop for large bodies when the Rust converter takes them:
    it releases the GIL, so on a multi-core machine the next batch is converted while the loop
    stores this one (measured: see docs/store.md, Performance).

    Tried and reverted: converting inline when no other batch is being stored (the thread hop
    only overlaps work with several senders). It saved CPU per span with one sender, but the
    batches then no longer share a group commit, so each became its own stored chunk and a
    10,000-span read through the compact page took ~140 ms instead of ~72 ms
    (``benchmarks/store_read.py --sizes 10000``)."""
    if len(body) >= OFFLOAD_BYTES and native_intake():
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_pool(), convert, body)
    return convert(body)
