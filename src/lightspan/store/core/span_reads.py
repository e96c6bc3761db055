"""The span reads of :class:`~lightspan.store.core.store.CoreStore`: queries over a rollout's
spans (models, stored JSON, compact-page frames) and sequence ids handed out to callers.

A mixin of ``CoreStore``: it uses the store's transactions.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightspan.store.api.base import paginated
from lightspan.store.api.models import PaginatedResult, Span
from lightspan.store.api.query import Cond, Query
from lightspan.store.core.tx import StoreTx


class SpanReads:
    """The ``_query_spans*`` hooks (``base.py`` builds their query) and
    ``get_*_span_sequence_id*`` for :class:`~lightspan.store.core.store.CoreStore`."""

    async def _resolve_attempt(self, tx: StoreTx, q: Query) -> Query | None:
        """``q`` (this call's own) with ``attempt_id "latest"`` (see
        ``LightningStore._span_query``) replaced by the latest attempt's id; ``None`` if the
        rollout has no attempt (nothing matches)."""
        for i, cond in enumerate(q.must):
            if cond.field == "attempt_id" and cond.value == "latest":
                rollout_id = next(c.value for c in q.must if c.field == "rollout_id")
                latest = (await tx.latest_attempts([rollout_id])).get(rollout_id)
                if latest is None:
                    return None
                q.must[i] = Cond("attempt_id", "exact", latest.attempt_id)
        return q

    async def _query_spans(self, q: Query) -> PaginatedResult[Span]:
        async with self._tx(write=False) as tx:
            resolved = await self._resolve_attempt(tx, q)
            items, total = await tx.query_spans(resolved) if resolved is not None else ([], 0)
        return paginated(q, items, total)

    async def _query_spans_json(self, q: Query) -> tuple[list[str], int]:
        async with self._tx(write=False) as tx:
            resolved = await self._resolve_attempt(tx, q)
            return await tx.query_spans_json(resolved) if resolved is not None else ([], 0)

    async def _query_spans_frames(self, q: Query) -> tuple[list[bytes], int, int]:
        async with self._tx(write=False) as tx:
            resolved = await self._resolve_attempt(tx, q)
            return await tx.query_spans_frames(resolved) if resolved is not None else ([], 0, 0)

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
