"""OTLP span intake shared by OTLP/HTTP and OTLP/gRPC: convert, number, store, report.

Why shared: both transports must accept and reject exactly the same spans and report them the
same way (OTLP ``partial_success``), and a batch is acknowledged only after the store has made it
durable (``add_many_spans`` returns after commit), so nothing acknowledged is ever lost.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from pydantic import ValidationError

from .base import AddSpansResult, LightningStore, NotFoundError
from .core import CoreStore
from .models import OtelResource, Span, SpanContext
from .otlp import OtlpSpans, RejectedSpan, spans_from_protobuf, spans_from_request
from .span_row import SpanRow, SpanRowError, native_intake, rows_from_protobuf
from .tx import StoreTx

__all__ = [
    "IngestResult",
    "RowBatch",
    "convert_protobuf",
    "convert_protobuf_async",
    "ingest_request",
    "ingest_span_dicts",
]

logger = logging.getLogger("lightspan.store.intake")

Then = Callable[[StoreTx], Awaitable[Any]]
"""Writes that commit with a batch's spans (see ``CoreStore.add_many_spans``)."""


@dataclass(slots=True)
class IngestResult:
    """How an export went: spans stored, duplicates ignored, spans rejected and why."""

    received: int
    stored: int
    duplicates: int
    rejected: int
    message: str
    then_result: Any = None
    """What ``ingest_span_dicts(then=...)`` returned."""

    def to_response(self) -> ExportTraceServiceResponse:
        """The OTLP response: empty on full success, ``partial_success`` when spans were dropped."""
        response = ExportTraceServiceResponse()
        if self.rejected:
            response.partial_success.rejected_spans = self.rejected
            response.partial_success.error_message = self.message
        return response


@dataclass(slots=True)
class RowBatch:
    """An export converted straight to :class:`SpanRow` objects (the Rust converter)."""

    rows: list[SpanRow]
    rejected: list[RejectedSpan]


def convert_protobuf(store: LightningStore, body: bytes) -> OtlpSpans | RowBatch:
    """Convert an OTLP/protobuf body for ``store``: rows from the Rust converter when the store
    is one of ours and the module is built (see ``span_row.rows_from_protobuf``), else Span dicts.
    Raises :class:`~lightspan.store.otlp.OtlpDecodeError` for a malformed body."""
    if isinstance(store, CoreStore):
        native = rows_from_protobuf(body)
        if native is not None:
            return RowBatch(*native)
    return spans_from_protobuf(body)


OFFLOAD_BYTES = 32 * 1024
"""Bodies at least this large are converted on the conversion thread (see
:func:`convert_protobuf_async`); smaller ones cost less inline than a thread hop (~50 us)."""

_convert_pool: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _convert_pool
    if _convert_pool is None:
        _convert_pool = ThreadPoolExecutor(1, thread_name_prefix="lightspan-otlp-convert")
    return _convert_pool


async def convert_protobuf_async(store: LightningStore, body: bytes) -> OtlpSpans | RowBatch:
    """:func:`convert_protobuf` off the event loop for large bodies when the Rust converter
    takes them: it releases the GIL, so on a multi-core machine the next batch is converted
    while the loop stores this one (measured: see docs/store.md, Performance).

    Tried and reverted: converting inline when no other batch is being stored (the thread hop
    only overlaps work with several senders). It saved CPU per span with one sender, but the
    batches then no longer share a group commit, so each became its own stored chunk and a
    10,000-span read through the compact page took ~140 ms instead of ~72 ms
    (``benchmarks/store_read.py --sizes 10000``)."""
    if len(body) >= OFFLOAD_BYTES and isinstance(store, CoreStore) and native_intake():
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_pool(), convert_protobuf, store, body)
    return convert_protobuf(store, body)


_ASSIGNS_IN_TX: WeakKeyDictionary[type, bool] = WeakKeyDictionary()


def _assigns_in_transaction(store: LightningStore) -> bool:
    """Whether ``add_many_spans`` can issue sequence ids itself (``assign_sequence_ids=``), in
    the transaction that stores the spans: one round trip instead of two."""
    cls = type(store)
    known = _ASSIGNS_IN_TX.get(cls)
    if known is None:
        params = inspect.signature(store.add_many_spans).parameters
        known = _ASSIGNS_IN_TX[cls] = "assign_sequence_ids" in params
    return known


async def _assign_sequence_ids(store: LightningStore, dicts: list[dict[str, Any]]) -> None:
    """Issue sequence ids (per rollout, as the reference does) for spans that carry none."""
    missing = [d for d in dicts if d["sequence_id"] is None]
    if not missing:
        return
    try:
        ids = await store.get_many_span_sequence_ids(
            [(d["rollout_id"], d["attempt_id"]) for d in missing]
        )
    except NotFoundError:
        # Unknown rollout(s) in the batch (auto-registration off, or the backend issues ids only
        # for known rollouts): number pair by pair so one unknown rollout doesn't sink the rest;
        # add_many_spans then rejects (or registers) those spans with a proper reason.
        ids = []
        for d in missing:
            try:
                ids.append(await store.get_next_span_sequence_id(d["rollout_id"], d["attempt_id"]))
            except NotFoundError:
                ids.append(0)
    for d, seq in zip(missing, ids, strict=True):
        d["sequence_id"] = seq


def _prebuilt(d: dict[str, Any], resources: dict[int, tuple[Any, OtelResource]]) -> dict[str, Any]:
    """Swap nested dicts for model instances before validating the span: pydantic accepts
    instances as they are, and this is ~2x cheaper than validating the nested dicts inside the
    Span. The resource is one instance per OTLP ResourceSpans, shared by its spans (as the
    reference's ``spans_from_proto`` does)."""
    res = d["resource"]
    cached = resources.get(id(res))
    if cached is None:
        cached = resources[id(res)] = (res, OtelResource.model_validate(res))
    ctx, parent = d["context"], d["parent"]
    return {
        **d,
        "resource": cached[1],
        "context": SpanContext.model_validate(ctx) if ctx is not None else None,
        "parent": SpanContext.model_validate(parent) if parent is not None else None,
    }


async def _store_rows(
    store: CoreStore, rows: list[SpanRow], then: Then | None = None
) -> AddSpansResult | None:
    """Store rows, sequence ids issued in the storing transaction for those that carry none."""
    if not rows and then is None:
        return None
    assign = [i for i, row in enumerate(rows) if row.sequence_id_pending]
    return await store.add_many_spans(rows, assign_sequence_ids=assign, then=then)  # type: ignore[arg-type]


async def _add_rows(
    store: CoreStore, converted: OtlpSpans, rejected: list[RejectedSpan], then: Then | None = None
) -> AddSpansResult | None:
    """The fast path for our own stores: :class:`SpanRow` objects (no pydantic models; see
    ``span_row.py``), sequence ids issued in the storing transaction. Consumes
    ``converted.spans`` (emptied: the dicts are not needed once the rows hold their JSON)."""
    rows: list[SpanRow] = []
    dicts, converted.spans = converted.spans, []
    for d in dicts:
        try:
            rows.append(SpanRow(d))
        except SpanRowError as exc:
            rejected.append(RejectedSpan(str(d.get("span_id")), str(d.get("name")), str(exc)))
    dicts.clear()
    return await _store_rows(store, rows, then)


async def ingest_span_dicts(
    store: LightningStore,
    converted: OtlpSpans | RowBatch,
    *,
    validate: bool = False,
    then: Then | None = None,
) -> IngestResult:
    """Store converted spans; rejections from conversion, validation and the store are counted.

    Our own stores get the spans as :class:`SpanRow` objects (no pydantic validation: the
    converter's dicts are well-formed by construction; a :class:`RowBatch` from the Rust
    converter is already rows); other stores (a remote client, the reference) get ``Span``
    models. ``validate=True`` forces the model path (benchmarks compare the two). ``then``:
    writes that commit with the spans (``CoreStore.add_many_spans``; our stores only)."""
    return await _ingest(store, converted, validate, then)


async def _ingest(
    store: LightningStore, converted: OtlpSpans | RowBatch, validate: bool, then: Then | None
) -> IngestResult:
    if isinstance(converted, RowBatch):
        rejected = list(converted.rejected)
        received = len(converted.rows) + len(rejected)
        if not isinstance(store, CoreStore):
            raise TypeError("a RowBatch is for lightspan's own stores; convert to Span dicts")
        return _summarise(await _store_rows(store, converted.rows, then), rejected, received)
    rejected: list[RejectedSpan] = list(converted.rejected)
    received = len(converted.spans) + len(rejected)
    if isinstance(store, CoreStore) and not validate:
        result = await _add_rows(store, converted, rejected, then)
        return _summarise(result, rejected, received)
    if then is not None:
        raise TypeError("then= needs one of lightspan's own stores (and validate=False)")
    in_tx = _assigns_in_transaction(store)
    if not in_tx:
        await _assign_sequence_ids(store, converted.spans)
    models: list[Span] = []
    assign: list[int] = []
    resources: dict[int, tuple[Any, OtelResource]] = {}
    for d in converted.spans:
        if d["sequence_id"] is None:
            assign.append(len(models))
            d["sequence_id"] = 0  # issued by add_many_spans in its transaction
        try:
            models.append(Span.model_validate(_prebuilt(d, resources)))
        except ValidationError as exc:
            if assign and assign[-1] == len(models):
                assign.pop()
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            rejected.append(RejectedSpan(d["span_id"], d["name"], f"{where}: {first['msg']}"))
    result: AddSpansResult | None = None
    if models:
        if in_tx:
            result = await store.add_many_spans(models, assign_sequence_ids=assign)  # type: ignore[call-arg]
        else:
            result = await store.add_many_spans(models)
    return _summarise(result, rejected, received)


def _summarise(
    result: AddSpansResult | None, rejected: list[RejectedSpan], received: int
) -> IngestResult:
    stored = duplicates = 0
    if result is not None:
        stored = len(result)
        for outcome in result.not_stored():
            if outcome.status == "duplicate":
                duplicates += 1
            else:
                span = outcome.span
                rejected.append(RejectedSpan(span.span_id, span.name, outcome.reason or "rejected"))
    summary = OtlpSpans(rejected=rejected).error_message()
    if rejected:
        logger.info("OTLP export: %d of %d span(s) %s", len(rejected), received, summary)
    then_result = result.then_result if result is not None else None
    return IngestResult(received, stored, duplicates, len(rejected), summary, then_result)


async def ingest_request(store: LightningStore, request: ExportTraceServiceRequest) -> IngestResult:
    """Convert an OTLP export request and store its spans."""
    return await ingest_span_dicts(store, spans_from_request(request))
