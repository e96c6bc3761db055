"""Storing converted spans and reporting how it went: shared by every way spans arrive.

OTLP/HTTP, OTLP/gRPC, the runner exchange and the in-process exporter all hand a body to
``convert.convert`` and its rows to :func:`ingest`. Why shared: every way must accept and reject
exactly the same spans and report them the same way (OTLP ``partial_success``), and a batch is
acknowledged only after the store has made it durable (``add_many_spans`` returns after commit),
so nothing acknowledged is ever lost.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from pydantic import ValidationError

from lightspan.store.api.base import AddSpansResult, LightningStore
from lightspan.store.api.models import Span
from lightspan.store.core.store import CoreStore
from lightspan.store.core.tx import StoreTx
from lightspan.store.intake.convert import Converted
from lightspan.store.intake.otlp import OtlpSpans, RejectedSpan
from lightspan.store.intake.span_row import SpanRow

__all__ = ["IngestResult", "ingest"]

logger = logging.getLogger("lightspan.store.intake.ingest")

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


async def _store_rows(
    store: CoreStore, converted: Converted, then: Then | None = None
) -> AddSpansResult | None:
    """Store rows, sequence ids issued in the storing transaction for those that carry none."""
    if not converted.rows and then is None:
        return None
    return await store.add_span_rows(converted.rows, groups=converted.groups, then=then)


async def _add_to_other_store(
    store: LightningStore, rows: list[SpanRow], rejected: list[RejectedSpan]
) -> AddSpansResult | None:
    """The adapter for a store that is not one of ours (the HTTP client of a remote store,
    another implementation of the interface): the rows as ``Span`` models, through the v0.3
    API (``assign_sequence_ids`` for rows that carry no sequence id)."""
    models: list[Span] = []
    assign: list[int] = []
    for row in rows:
        try:
            model = row.to_span()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            rejected.append(RejectedSpan(row.span_id, row.name, f"{where}: {first['msg']}"))
            continue
        if row.sequence_id_pending:
            assign.append(len(models))
        models.append(model)
    if not models:
        return None
    return await store.add_many_spans(models, assign_sequence_ids=assign)


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
        result = await _store_rows(store, converted, then)
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
