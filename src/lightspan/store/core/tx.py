"""The storage primitives a backend provides, inside one transaction.

Why this seam: the LightningStore's rules are written once (``core.py``) against these
primitives, so every backend behaves identically; a backend only has to store and find records
atomically. A :class:`StoreTx` is valid inside ``async with backend._tx(write=...)``: all its
effects commit together when the block exits normally and none of them otherwise.

Concurrency contract (what makes PostgreSQL with several servers safe): every transaction that
changes a rollout or its attempts first reads the rollout with ``for_update=True`` (a row lock
in PostgreSQL; SQLite and memory serialize whole write transactions), and
:meth:`claim_queued` never returns a rollout another open transaction has claimed.

Queue invariant, kept by the backend on every rollout write: a rollout is in the queue exactly
while its status is ``queuing`` or ``requeuing``; entering such a status appends it at the tail,
leaving it removes it.
"""

from __future__ import annotations

from typing import Protocol

from lightspan.store.api.models import Attempt, ResourcesUpdate, Rollout, Span, Worker
from lightspan.store.api.query import Query
from lightspan.store.intake.span_row import SpanRow


class StoreTx(Protocol):
    # rollouts
    async def get_rollouts(
        self, rollout_ids: list[str], *, for_update: bool = False
    ) -> dict[str, Rollout]: ...
    async def insert_rollouts(
        self, rollouts: list[Rollout], *, if_absent: bool = False
    ) -> None: ...
    async def save_rollout(self, rollout: Rollout) -> None: ...
    async def claim_queued(self, limit: int) -> list[Rollout]: ...
    async def rollouts_in_status(self, statuses: list[str]) -> list[Rollout]: ...
    async def health_due(self, now: float) -> list[str]:
        """The health scan's candidates, sorted: ids of rollouts whose latest attempt's due
        time (:func:`~lightspan.store.core.lifecycle.health_due_time`, kept up to date by every
        write of a rollout or an attempt) is at most ``now`` (plus
        :data:`~lightspan.store.core.lifecycle.HEALTH_DUE_SLACK`). Its cost follows the rollouts
        due, not the running ones. Every rollout that :func:`health_verdict` marks at ``now``
        is among them; others may be (a due time is never later than the true one, and an
        older attempt may keep one until :meth:`refresh_due`): the scan re-checks each."""
        ...

    async def refresh_due(self, rollout_ids: list[str]) -> None:
        """Recompute the due times of these rollouts' attempts from the stored rows (the scan
        calls it for candidates it did not change, so they stop being candidates)."""
        ...

    async def query_rollouts(self, q: Query) -> tuple[list[Rollout], int]: ...

    # attempts
    async def get_attempts(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Attempt]: ...
    async def latest_attempts(self, rollout_ids: list[str]) -> dict[str, Attempt]: ...
    async def insert_attempt(self, attempt: Attempt, *, if_absent: bool = False) -> None: ...
    async def save_attempt(self, attempt: Attempt) -> None: ...
    async def save_attempts(self, attempts: list[Attempt]) -> None:
        """:meth:`save_attempt` for several attempts (a span batch's heartbeats): one call."""
        ...

    async def query_attempts(self, q: Query) -> tuple[list[Attempt], int]: ...

    # workers
    async def get_worker(self, worker_id: str) -> Worker | None: ...
    async def save_worker(self, worker: Worker) -> None: ...
    async def query_workers(self, q: Query) -> tuple[list[Worker], int]: ...

    # resources
    async def get_resources(self, resources_id: str) -> ResourcesUpdate | None: ...
    async def latest_resources(self) -> ResourcesUpdate | None: ...
    async def save_resources(self, update: ResourcesUpdate) -> None: ...
    async def query_resources(self, q: Query) -> tuple[list[ResourcesUpdate], int]: ...

    # spans
    async def insert_spans(
        self, groups: dict[tuple[str, str], list[SpanRow]]
    ) -> dict[tuple[str, str], set[str]]:
        """Insert the spans that are new, given per ``(rollout_id, attempt_id)`` (distinct span
        ids in each list, in arrival order); return the span ids inserted, per attempt (attempts
        with none may be left out)."""
        ...

    async def query_spans(self, q: Query) -> tuple[list[Span], int]: ...
    async def query_spans_json(self, q: Query) -> tuple[list[str], int]: ...
    async def query_spans_frames(self, q: Query) -> tuple[list[bytes], int, int]:
        """The page as compact-page frames (``span_frames.py``), its span count and total."""
        ...

    async def bump_span_seq(self, rollout_id: str, n: int) -> int:
        """Add ``n`` to the rollout's span counter; return the new value."""
        ...

    async def raise_span_seqs(self, values: dict[str, int]) -> None:
        """Set each rollout's counter to ``max(counter, value)``."""
        ...

    async def counts(self) -> dict[str, int]: ...
