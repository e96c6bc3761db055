"""In-process LightningStore kept in dictionaries: the development mode (``store.type: in_memory``).

Why it is built on the same core as the database backends: code that works against it works
against SQLite and PostgreSQL unchanged. Nothing survives the process. Records handed out are
copies (except spans, which are immutable by convention and too many to copy), so callers
cannot change the store by mutating a result.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from lightspan.store.api.models import (
    QUEUING_ROLLOUT_STATUSES,
    Attempt,
    ResourcesUpdate,
    Rollout,
    Span,
    Worker,
)
from lightspan.store.api.query import Query, run_query
from lightspan.store.api.span_frames import compress_docs
from lightspan.store.core import lifecycle as lc
from lightspan.store.core.store import DEFAULT_AUTO_ROLLOUT_TIMEOUT, CoreStore
from lightspan.store.intake.span_row import SpanRow


def _get(item: Any, name: str) -> Any:
    return getattr(item, name, None)


class _MemoryData:
    def __init__(self) -> None:
        self.rollouts: dict[str, Rollout] = {}
        self.queue: dict[str, None] = {}  # ordered set: FIFO of queued rollout ids
        self.attempts: dict[str, list[Attempt]] = {}
        self.workers: dict[str, Worker] = {}
        self.resources: dict[str, ResourcesUpdate] = {}
        self.resources_write_seq: dict[str, int] = {}
        self.write_seq = 0
        self.spans: dict[str, dict[tuple[str, str], SpanRow]] = {}
        self.span_count = 0
        self.span_seq: dict[str, int] = {}
        # Due times of running rollouts' latest attempts (lifecycle.health_due_time) and a
        # min-heap of (due, rollout id) over them; entries that no longer match ``due`` are
        # dropped when met, and the heap is rebuilt when they outnumber the live ones.
        self.due: dict[str, float] = {}
        self.due_heap: list[tuple[float, str]] = []


class _MemoryTx:
    """Direct access to the dictionaries; atomicity comes from the store's lock and the fact that
    nothing here awaits. (A failed call may leave a partial write; the core validates before
    writing, so in practice it does not.)"""

    def __init__(self, data: _MemoryData) -> None:
        self.d = data

    # rollouts
    async def get_rollouts(
        self, rollout_ids: list[str], *, for_update: bool = False
    ) -> dict[str, Rollout]:
        return {
            r: self.d.rollouts[r].model_copy(deep=True) for r in rollout_ids if r in self.d.rollouts
        }

    def _refresh_due(self, rollout_id: str) -> None:
        rollout = self.d.rollouts.get(rollout_id)
        attempts = self.d.attempts.get(rollout_id)
        due = None
        if rollout is not None and attempts:
            latest = max(attempts, key=lambda a: a.sequence_id)
            cfg = rollout.config
            due = lc.health_due_time(
                rollout.status, cfg.timeout_seconds, cfg.unresponsive_seconds, latest
            )
        if due is None:
            self.d.due.pop(rollout_id, None)
            return
        if self.d.due.get(rollout_id) == due:
            return
        self.d.due[rollout_id] = due
        heap = self.d.due_heap
        heapq.heappush(heap, (due, rollout_id))
        if len(heap) > 2 * len(self.d.due) + 64:
            heap[:] = [(d, r) for r, d in self.d.due.items()]
            heapq.heapify(heap)

    def _queue_follow(self, rollout: Rollout) -> None:
        if rollout.status in QUEUING_ROLLOUT_STATUSES:
            self.d.queue.setdefault(rollout.rollout_id, None)
        else:
            self.d.queue.pop(rollout.rollout_id, None)

    async def insert_rollouts(self, rollouts: list[Rollout], *, if_absent: bool = False) -> None:
        for r in rollouts:
            if r.rollout_id in self.d.rollouts:
                if if_absent:
                    continue
                raise ValueError(f"rollout {r.rollout_id!r} already exists")
            self.d.rollouts[r.rollout_id] = r.model_copy(deep=True)
            self._queue_follow(r)
            self._refresh_due(r.rollout_id)

    async def save_rollout(self, rollout: Rollout) -> None:
        self.d.rollouts[rollout.rollout_id] = Rollout.model_validate(
            {k: v for k, v in rollout.model_dump().items() if k != "attempt"}
        )
        self._queue_follow(rollout)
        self._refresh_due(rollout.rollout_id)

    async def claim_queued(self, limit: int) -> list[Rollout]:
        out = []
        for rollout_id in list(self.d.queue)[:limit]:
            del self.d.queue[rollout_id]
            out.append(self.d.rollouts[rollout_id].model_copy(deep=True))
        return out

    async def rollouts_in_status(self, statuses: list[str]) -> list[Rollout]:
        return [r.model_copy(deep=True) for r in self.d.rollouts.values() if r.status in statuses]

    async def health_due(self, now: float) -> list[str]:
        heap, due, found = self.d.due_heap, self.d.due, []
        limit = now + lc.HEALTH_DUE_SLACK
        while heap and heap[0][0] <= limit:
            d, rollout_id = heapq.heappop(heap)
            if due.get(rollout_id) == d:
                found.append((d, rollout_id))
        for entry in found:  # still due until the scan changes them
            heapq.heappush(heap, entry)
        return sorted({r for _, r in found})

    async def refresh_due(self, rollout_ids: list[str]) -> None:
        for rollout_id in rollout_ids:
            self._refresh_due(rollout_id)

    async def query_rollouts(self, q: Query) -> tuple[list[Rollout], int]:
        items, total = run_query(self.d.rollouts.values(), q, _get)
        return [r.model_copy(deep=True) for r in items], total

    # attempts
    async def get_attempts(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Attempt]:
        out = {}
        for rollout_id, attempt_id in keys:
            for a in self.d.attempts.get(rollout_id, ()):
                if a.attempt_id == attempt_id:
                    out[(rollout_id, attempt_id)] = a.model_copy(deep=True)
        return out

    async def latest_attempts(self, rollout_ids: list[str]) -> dict[str, Attempt]:
        out = {}
        for r in rollout_ids:
            attempts = self.d.attempts.get(r)
            if attempts:
                out[r] = max(attempts, key=lambda a: a.sequence_id).model_copy(deep=True)
        return out

    async def insert_attempt(self, attempt: Attempt, *, if_absent: bool = False) -> None:
        existing = self.d.attempts.setdefault(attempt.rollout_id, [])
        if any(a.attempt_id == attempt.attempt_id for a in existing):
            if if_absent:
                return
            raise ValueError(f"attempt {attempt.attempt_id!r} already exists")
        existing.append(attempt.model_copy(deep=True))
        self._refresh_due(attempt.rollout_id)

    async def save_attempt(self, attempt: Attempt) -> None:
        attempts = self.d.attempts[attempt.rollout_id]
        for i, a in enumerate(attempts):
            if a.attempt_id == attempt.attempt_id:
                attempts[i] = attempt.model_copy(deep=True)
                self._refresh_due(attempt.rollout_id)
                return
        raise KeyError(attempt.attempt_id)

    async def save_attempts(self, attempts: list[Attempt]) -> None:
        for attempt in attempts:
            await self.save_attempt(attempt)

    async def query_attempts(self, q: Query) -> tuple[list[Attempt], int]:
        rollout_id = next(c.value for c in q.must if c.field == "rollout_id")
        items, total = run_query(self.d.attempts.get(rollout_id, []), q, _get)
        return [a.model_copy(deep=True) for a in items], total

    # workers
    async def get_worker(self, worker_id: str) -> Worker | None:
        w = self.d.workers.get(worker_id)
        return w.model_copy(deep=True) if w is not None else None

    async def save_worker(self, worker: Worker) -> None:
        self.d.workers[worker.worker_id] = worker.model_copy(deep=True)

    async def query_workers(self, q: Query) -> tuple[list[Worker], int]:
        items, total = run_query(self.d.workers.values(), q, _get)
        return [w.model_copy(deep=True) for w in items], total

    # resources
    async def get_resources(self, resources_id: str) -> ResourcesUpdate | None:
        r = self.d.resources.get(resources_id)
        return r.model_copy(deep=True) if r is not None else None

    async def latest_resources(self) -> ResourcesUpdate | None:
        if not self.d.resources:
            return None
        best = max(
            self.d.resources.values(),
            key=lambda r: (r.update_time, self.d.resources_write_seq[r.resources_id]),
        )
        return best.model_copy(deep=True)

    async def save_resources(self, update: ResourcesUpdate) -> None:
        self.d.write_seq += 1
        self.d.resources[update.resources_id] = update.model_copy(deep=True)
        self.d.resources_write_seq[update.resources_id] = self.d.write_seq

    async def query_resources(self, q: Query) -> tuple[list[ResourcesUpdate], int]:
        items, total = run_query(self.d.resources.values(), q, _get)
        return [r.model_copy(deep=True) for r in items], total

    # spans
    async def insert_spans(
        self, groups: dict[tuple[str, str], list[SpanRow]]
    ) -> dict[tuple[str, str], set[str]]:
        inserted: dict[tuple[str, str], set[str]] = {}
        for (rollout_id, attempt_id), group in groups.items():
            bucket = self.d.spans.setdefault(rollout_id, {})
            ids = inserted[(rollout_id, attempt_id)] = set()
            for s in group:
                if (attempt_id, s.span_id) not in bucket:
                    bucket[(attempt_id, s.span_id)] = s
                    ids.add(s.span_id)
            self.d.span_count += len(ids)
        return inserted

    async def query_spans(self, q: Query) -> tuple[list[Span], int]:
        rollout_id = next(c.value for c in q.must if c.field == "rollout_id")
        bucket = self.d.spans.get(rollout_id, {})
        items, total = run_query(bucket.values(), q, _get)
        # Spans are kept as rows (no model built on the write path); a row builds its model
        # on the first read that needs it and keeps it (SpanRow.to_span).
        return [row.to_span() for row in items], total

    async def query_spans_json(self, q: Query) -> tuple[list[str], int]:
        rollout_id = next(c.value for c in q.must if c.field == "rollout_id")
        items, total = run_query(self.d.spans.get(rollout_id, {}).values(), q, _get)
        return [row.doc() for row in items], total

    async def query_spans_frames(self, q: Query) -> tuple[list[bytes], int, int]:
        docs, total = await self.query_spans_json(q)
        return ([compress_docs(docs)] if docs else []), len(docs), total

    async def bump_span_seq(self, rollout_id: str, n: int) -> int:
        self.d.span_seq[rollout_id] = self.d.span_seq.get(rollout_id, 0) + n
        return self.d.span_seq[rollout_id]

    async def raise_span_seqs(self, values: dict[str, int]) -> None:
        for rollout_id, value in values.items():
            self.d.span_seq[rollout_id] = max(self.d.span_seq.get(rollout_id, 0), value)

    async def counts(self) -> dict[str, int]:
        return {
            "total_rollouts": len(self.d.rollouts),
            "total_attempts": sum(len(a) for a in self.d.attempts.values()),
            "total_spans": self.d.span_count,
            "total_resources": len(self.d.resources),
            "total_workers": len(self.d.workers),
        }


class InMemoryLightningStore(CoreStore):
    """All data in this process's memory; no dependencies; lost when the process ends."""

    def __init__(
        self,
        *,
        scan_interval: float = 5.0,
        auto_register_rollouts: bool = True,
        auto_rollout_timeout: float | None = DEFAULT_AUTO_ROLLOUT_TIMEOUT,
        wait_poll_interval: float = 0.5,
    ) -> None:
        super().__init__(
            scan_interval=scan_interval,
            auto_register_rollouts=auto_register_rollouts,
            auto_rollout_timeout=auto_rollout_timeout,
            wait_poll_interval=wait_poll_interval,
        )
        self._data = _MemoryData()
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[_MemoryTx]:
        async with self._lock:
            yield _MemoryTx(self._data)
