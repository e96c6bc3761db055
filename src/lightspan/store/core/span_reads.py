"""The span reads of :class:`~lightspan.store.core.store.CoreStore`: queries over a rollout's
spans (models, stored JSON, compact-page frames) and sequence ids handed out to callers.

A mixin of ``CoreStore``: it uses the store's transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from lightspan.store.api.base import (
    SPAN_SORT_FIELDS,
    InvalidRequestError,
    validate_page,
)
from lightspan.store.api.models import (
    PaginatedResult,
    Span,
)
from lightspan.store.api.query import Cond, Query
from lightspan.store.core.tx import StoreTx


class SpanReads:
    """``query_spans*`` and ``get_*_span_sequence_id*`` for
    :class:`~lightspan.store.core.store.CoreStore`."""

    def _span_query(
        self,
        rollout_id: str,
        attempt_id: str | None,
        filters: dict[str, str | None],
        filter_logic: str,
        limit: int,
        offset: int,
        sort_by: str | None,
        sort_order: str,
    ) -> Query:
        validate_page(
            limit=limit,
            offset=offset,
            sort_by=sort_by,
            sort_order=sort_order,
            sortable=SPAN_SORT_FIELDS,
            what="spans",
            filter_logic=filter_logic,
        )
        must = [Cond("rollout_id", "exact", rollout_id)]
        if attempt_id is not None:
            must.append(Cond("attempt_id", "exact", attempt_id))
        conds: list[Cond] = []
        for key, value in filters.items():
            if value is None:
                continue
            if key.endswith("_contains"):
                conds.append(Cond(key[: -len("_contains")], "contains", value))
            else:
                conds.append(Cond(key, "exact", value))
        return Query(
            must=must,
            conds=conds,
            logic=filter_logic,  # type: ignore[arg-type]
            sort_by=sort_by,
            sort_order=sort_order,  # type: ignore[arg-type]
            limit=limit,
            offset=offset,
        )

    async def _resolve_attempt(self, tx: StoreTx, rollout_id: str, attempt_id: str | None) -> Any:
        """``"latest"`` -> the latest attempt's id, or ``False`` if the rollout has none."""
        if attempt_id != "latest":
            return attempt_id
        latest = (await tx.latest_attempts([rollout_id])).get(rollout_id)
        return latest.attempt_id if latest is not None else False

    async def query_spans(
        self,
        rollout_id: str,
        attempt_id: str | None = None,
        *,
        trace_id: str | None = None,
        trace_id_contains: str | None = None,
        span_id: str | None = None,
        span_id_contains: str | None = None,
        parent_id: str | None = None,
        parent_id_contains: str | None = None,
        name: str | None = None,
        name_contains: str | None = None,
        filter_logic: Literal["and", "or"] = "and",
        limit: int = -1,
        offset: int = 0,
        sort_by: str | None = "sequence_id",
        sort_order: Literal["asc", "desc"] = "asc",
    ) -> PaginatedResult[Span]:
        filters = {
            "trace_id": trace_id,
            "trace_id_contains": trace_id_contains,
            "span_id": span_id,
            "span_id_contains": span_id_contains,
            "parent_id": parent_id,
            "parent_id_contains": parent_id_contains,
            "name": name,
            "name_contains": name_contains,
        }
        q = self._span_query(
            rollout_id, None, filters, filter_logic, limit, offset, sort_by, sort_order
        )
        async with self._tx(write=False) as tx:
            resolved = await self._resolve_attempt(tx, rollout_id, attempt_id)
            if resolved is False:
                return PaginatedResult.model_construct(
                    items=[], limit=limit, offset=offset, total=0
                )
            if resolved is not None:
                q.must.append(Cond("attempt_id", "exact", resolved))
            items, total = await tx.query_spans(q)
        return PaginatedResult.model_construct(items=items, limit=limit, offset=offset, total=total)

    async def query_spans_json(
        self, rollout_id: str, attempt_id: str | None = None, **kw: Any
    ) -> tuple[list[str], int]:
        return await self._query_spans_stored(rollout_id, attempt_id, kw, frames=False)

    async def query_spans_frames(
        self, rollout_id: str, attempt_id: str | None = None, **kw: Any
    ) -> tuple[list[bytes], int, int]:
        return await self._query_spans_stored(rollout_id, attempt_id, kw, frames=True)

    async def _query_spans_stored(
        self, rollout_id: str, attempt_id: str | None, kw: dict[str, Any], *, frames: bool
    ) -> Any:
        """A span query answered from the stored documents: as JSON texts and the total, or
        (``frames``) as compact-page frames, the span count and the total."""
        filter_logic = kw.pop("filter_logic", "and")
        limit = kw.pop("limit", -1)
        offset = kw.pop("offset", 0)
        sort_by = kw.pop("sort_by", "sequence_id")
        sort_order = kw.pop("sort_order", "asc")
        allowed = {
            f"{f}{suffix}"
            for f in ("trace_id", "span_id", "parent_id", "name")
            for suffix in ("", "_contains")
        }
        unknown = set(kw) - allowed
        if unknown:
            raise InvalidRequestError(f"unknown span filter(s): {', '.join(sorted(unknown))}")
        q = self._span_query(rollout_id, None, kw, filter_logic, limit, offset, sort_by, sort_order)
        async with self._tx(write=False) as tx:
            resolved = await self._resolve_attempt(tx, rollout_id, attempt_id)
            if resolved is False:
                return ([], 0, 0) if frames else ([], 0)
            if resolved is not None:
                q.must.append(Cond("attempt_id", "exact", resolved))
            if frames:
                return await tx.query_spans_frames(q)
            return await tx.query_spans_json(q)

    async def get_next_span_sequence_id(self, rollout_id: str, attempt_id: str) -> int:
        async with self._tx(write=True) as tx:
            return await tx.bump_span_seq(rollout_id, 1)

    async def get_many_span_sequence_ids(
        self, rollout_attempt_ids: Sequence[tuple[str, str]]
    ) -> Sequence[int]:
        counts: dict[str, int] = {}
        for rollout_id, _ in rollout_attempt_ids:
            counts[rollout_id] = counts.get(rollout_id, 0) + 1
        if not counts:
            return []
        async with self._tx(write=True) as tx:
            nxt = {r: await tx.bump_span_seq(r, n) - n for r, n in sorted(counts.items())}
        out: list[int] = []
        for rollout_id, _ in rollout_attempt_ids:
            nxt[rollout_id] += 1
            out.append(nxt[rollout_id])
        return out
