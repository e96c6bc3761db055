"""Storing converted spans and reporting how it went: shared by every way spans arrive.

OTLP/HTTP, OTLP/gRPC, the runner exchange and the in-process exporter all hand a body to
``convert.convert`` and its rows to :func:`ingest`. Why shared: every way must accept and reject
exactly the same spans and report them the same way (OTLP ``partial_success``), and a batch is
acknowledged only after the store has made it durable (``add_many_spans`` returns after commit),
so nothing acknowledged is ever lost.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from pydantic import ValidationError

from .base import AddSpansResult, LightningStore, NotFoundError
from .convert import Converted
from .core import CoreStore
from .models import Span
from .otlp import OtlpSpans, RejectedSpan
from .span_row import SpanRow
from .tx import StoreTx

__all__ = ["IngestResult", "ingest"]

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
    """What ``ingest(then=...)`` returned."""

    def to_response(self) -> ExportTraceServiceResponse:
        """The OTLP response: empty on full success, ``partial_success`` when spans were dropped."""
        response = ExportTraceServiceResponse()
        if self.rejected:
            response.partial_success.rejected_spans = self.rejected
            response.partial_success.error_message = self.message
        return response


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


async def _assign_sequence_ids(store: LightningStore, rows: list[SpanRow]) -> None:
    """Issue sequence ids (per rollout, as the reference does) for rows that carry none."""
    missing = [row for row in rows if row.sequence_id_pending]
    if not missing:
        return
    try:
        ids = await store.get_many_span_sequence_ids(
            [(row.rollout_id, row.attempt_id) for row in missing]
        )
    except NotFoundError:
        # Unknown rollout(s) in the batch (auto-registration off, or the backend issues ids only
        # for known rollouts): number pair by pair so one unknown rollout doesn't sink the rest;
        # add_many_spans then rejects (or registers) those spans with a proper reason.
        ids = []
        for row in missing:
            try:
                ids.append(await store.get_next_span_sequence_id(row.rollout_id, row.attempt_id))
            except NotFoundError:
                ids.append(0)
    for row, seq in zip(missing, ids, strict=True):
        row.sequence_id = seq


async def _store_rows(
    store: CoreStore, rows: list[SpanRow], then: Then | None = None
) -> AddSpansResult | None:
    """Store rows, sequence ids issued in the storing transaction for those that carry none."""
    if not rows and then is None:
        return None
    assign = [i for i, row in enumerate(rows) if row.sequence_id_pending]
    return await store.add_many_spans(rows, assign_sequence_ids=assign, then=then)  # type: ignore[arg-type]


async def _add_to_other_store(
    store: LightningStore, rows: list[SpanRow], rejected: list[RejectedSpan]
) -> AddSpansResult | None:
    """Rows as ``Span`` models, for a store that is not one of ours (a remote client, the
    reference): sequence ids issued in its transaction when it can, else asked for first."""
    in_tx = _assigns_in_transaction(store)
    if not in_tx:
        await _assign_sequence_ids(store, rows)
    models: list[Span] = []
    assign: list[int] = []
    for row in rows:
        pending = in_tx and row.sequence_id_pending
        try:
            models.append(row.to_span())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            rejected.append(RejectedSpan(row.span_id, row.name, f"{where}: {first['msg']}"))
            continue
        if pending:
            assign.append(len(models) - 1)
    if not models:
        return None
    if in_tx:
        return await store.add_many_spans(models, assign_sequence_ids=assign)  # type: ignore[call-arg]
    return await store.add_many_spans(models)


async def ingest(
    store: LightningStore, converted: Converted, *, then: Then | None = None
) -> IngestResult:
    """Store converted spans; rejections from conversion and from the store are counted.

    Our own stores get the :class:`SpanRow` objects as they are (sequence ids issued in the
    storing transaction); other stores (a remote client, the reference) get ``Span`` models.
    ``then``: writes that commit with the spans (``CoreStore.add_many_spans``; our stores only).
    """
    rejected = list(converted.rejected)
    rows = converted.rows
    received = len(rows) + len(rejected)
    if isinstance(store, CoreStore):
        result = await _store_rows(store, rows, then)
    elif then is not None:
        raise TypeError("then= needs one of lightspan's own stores")
    else:
        result = await _add_to_other_store(store, rows, rejected)
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
