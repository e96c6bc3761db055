"""The LightningStore's behaviour, written once over the transactional primitives of ``tx.py``.

Why one implementation for all backends: the conformance suite proves the backends identical,
and the simplest way to make that true is that only storage differs. Each public method is one
transaction (so it appears atomic), validates its arguments first (typed errors, see
``base.py``), and applies the rules of :mod:`lightspan.store.lifecycle`.

The background health scanner (:class:`~lightspan.store.scanner.HealthScanner`) calls
:meth:`CoreStore.scan_health` every ``scan_interval`` seconds; nothing is checked lazily.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from . import lifecycle as lc
from .base import (
    ATTEMPT_SORT_FIELDS,
    RESOURCES_SORT_FIELDS,
    ROLLOUT_SORT_FIELDS,
    SPAN_SORT_FIELDS,
    UNSET,
    WORKER_SORT_FIELDS,
    AddSpansResult,
    AttemptUpdate,
    InvalidRequestError,
    LightningStore,
    NotFoundError,
    SpanOutcome,
    StoreError,
    given,
    validate_page,
)
from .models import (
    FINISHED_ROLLOUT_STATUSES,
    RUNNING_ROLLOUT_STATUSES,
    Attempt,
    AttemptedRollout,
    AttemptStatus,
    EnqueueRolloutRequest,
    NamedResources,
    PaginatedResult,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutStatus,
    Span,
    Worker,
    WorkerStatus,
    new_attempt_id,
    new_resources_id,
    new_rollout_id,
)
from .query import Cond, Query
from .scanner import HealthScanner
from .span_row import SpanRow
from .tx import StoreTx

_RESOURCES_ADAPTER: TypeAdapter[NamedResources] = TypeAdapter(NamedResources)


def _invalid(what: str, err: ValidationError) -> InvalidRequestError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return InvalidRequestError(f"invalid {what}: {loc + ': ' if loc else ''}{first['msg']}")


def _config(config: RolloutConfig | dict[str, Any] | None) -> RolloutConfig:
    if config is None:
        return RolloutConfig()
    try:
        return RolloutConfig.model_validate(
            config.model_dump() if isinstance(config, RolloutConfig) else config
        )
    except ValidationError as e:
        raise _invalid("rollout config", e) from None


def _with_attempt(rollout: Rollout, attempt: Attempt | None) -> Rollout:
    if attempt is None:
        return rollout
    data = rollout.model_dump()
    data.pop("attempt", None)
    return AttemptedRollout.model_validate({**data, "attempt": attempt.model_dump()})


def _plain_rollout(rollout: Rollout) -> Rollout:
    if type(rollout) is Rollout:
        return rollout
    data = rollout.model_dump()
    data.pop("attempt", None)
    return Rollout.model_validate(data)


DEFAULT_AUTO_ROLLOUT_TIMEOUT = 3600.0
"""Seconds after which an auto-registered rollout whose root span never ended times out (its
``config.timeout_seconds``; ``None``/0: never). Without it, traffic whose root spans are lost
accumulates ``running`` rollouts forever."""

_SCAN_BATCH = 500
"""Rollouts changed per write transaction of a health scan: the write lock is held briefly."""


def _as_rows(
    spans: Sequence[Span | SpanRow], assign: Collection[int]
) -> tuple[list[SpanRow], list[tuple[int, Span]]]:
    """The batch as rows, and the models among it whose sequence id the store issues."""
    if all(type(s) is SpanRow for s in spans):
        return list(spans), []  # type: ignore[arg-type]
    issue = frozenset(assign)
    rows: list[SpanRow] = []
    models: list[tuple[int, Span]] = []
    for i, s in enumerate(spans):
        if type(s) is SpanRow:
            rows.append(s)
            continue
        pending = i in issue
        rows.append(SpanRow.from_span(s, pending=pending))  # type: ignore[arg-type]
        if pending:
            models.append((i, s))  # type: ignore[arg-type]
    return rows, models


@dataclass(slots=True)
class _SpanJob:
    """One ``add_many_spans`` call: its spans, the indices still to decide, the outcomes, the
    indices whose sequence id the store issues, and (under group commit) its future."""

    spans: list[SpanRow]
    candidates: list[int]
    outcomes: list[SpanOutcome | None]
    assign: frozenset[int]
    fut: asyncio.Future[None] | None = None
    then: Callable[[StoreTx], Awaitable[Any]] | None = None
    then_result: Any = None
    all_stored: bool = False  # every span stored: ``outcomes`` left unset (no object per span)

    def finish(self, error: BaseException | None) -> None:
        if self.fut is None or self.fut.done():
            return
        if error is None:
            self.fut.set_result(None)
        else:
            self.fut.set_exception(error)


class CoreStore(LightningStore):
    """LightningStore semantics over a backend's :meth:`_tx` transactions."""

    def __init__(
        self,
        *,
        scan_interval: float = 5.0,
        auto_register_rollouts: bool = True,
        auto_rollout_timeout: float | None = DEFAULT_AUTO_ROLLOUT_TIMEOUT,
        wait_poll_interval: float = 0.5,
    ) -> None:
        self.auto_register_rollouts = auto_register_rollouts
        self.auto_rollout_timeout = auto_rollout_timeout or None
        self._launch_time = time.time()
        self._scanner = HealthScanner(self.scan_health, interval=scan_interval)
        self._wait_poll_interval = wait_poll_interval
        self._finished = asyncio.Event()
        self._started = False
        self.group_commit = False
        """Backends set this where a commit is costly (an fsync): concurrent ``add_many_spans``
        calls then share one transaction (see :meth:`_group_add`)."""
        self._span_jobs: list[_SpanJob] = []
        self._span_flusher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ backend hooks

    @abc.abstractmethod
    def _tx(self, *, write: bool) -> AbstractAsyncContextManager[StoreTx]:
        """One transaction (see ``tx.py``)."""

    def _scan_tx(self) -> AbstractAsyncContextManager[StoreTx]:
        """The health scan's read transaction; SQLite overrides it with a second connection so
        the scan's query does not queue behind (or in front of) ingestion."""
        return self._tx(write=False)

    async def _open(self) -> None:
        """Connect and create the schema (backends override)."""

    async def _close_backend(self) -> None:
        """Disconnect (backends override)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._started:
            return
        await self._open()
        self._started = True
        self._scanner.start()

    async def close(self) -> None:
        await self._scanner.stop()
        self._started = False
        flusher = self._span_flusher
        if flusher is not None and not flusher.done():
            # Let span batches already accepted for a group commit finish first.
            await asyncio.wait([flusher])
        await self._close_backend()

    def _notify_finished(self) -> None:
        """Wake waiters of :meth:`wait_for_rollouts` (pulse: set, then replace)."""
        self._finished.set()
        self._finished = asyncio.Event()

    async def statistics(self) -> dict[str, Any]:
        async with self._tx(write=False) as tx:
            counts = await tx.counts()
        return {"name": type(self).__name__, **counts, "uptime": time.time() - self._launch_time}

    # ------------------------------------------------------------------ shared steps

    async def _latest_resources_id(self, tx: StoreTx) -> str | None:
        latest = await tx.latest_resources()
        return latest.resources_id if latest is not None else None

    async def _lock_rollout(self, tx: StoreTx, rollout_id: str) -> Rollout:
        found = await tx.get_rollouts([rollout_id], for_update=True)
        if rollout_id not in found:
            raise NotFoundError(f"rollout {rollout_id!r} not found")
        return found[rollout_id]

    async def _sync_worker(
        self, tx: StoreTx, attempt: Attempt, now: float, *, dequeue: bool = False
    ) -> None:
        if not attempt.worker_id:
            return
        worker = await tx.get_worker(attempt.worker_id) or Worker(worker_id=attempt.worker_id)
        await tx.save_worker(lc.worker_after_attempt(worker, attempt, now, dequeue=dequeue))

    async def _set_rollout_status(
        self, tx: StoreTx, rollout: Rollout, status: RolloutStatus, now: float
    ) -> Rollout:
        update: dict[str, Any] = {"status": status}
        if status in FINISHED_ROLLOUT_STATUSES:
            update["end_time"] = now
        rollout = rollout.model_copy(update=update)
        await tx.save_rollout(rollout)
        if status in FINISHED_ROLLOUT_STATUSES:
            self._notify_finished()
        return rollout

    async def _propagate(
        self, tx: StoreTx, rollout: Rollout, attempt: Attempt, latest: Attempt, now: float
    ) -> Rollout:
        """Move the rollout after its attempt's status changed (only the latest attempt counts)."""
        if attempt.attempt_id != latest.attempt_id:
            return rollout
        status = lc.rollout_status_from_attempt(attempt, rollout.config)
        if status != rollout.status:
            rollout = await self._set_rollout_status(tx, rollout, status, now)
        return rollout

    async def _new_attempt(
        self, tx: StoreTx, rollout: Rollout, worker_id: str | None, now: float
    ) -> Attempt:
        latest = (await tx.latest_attempts([rollout.rollout_id])).get(rollout.rollout_id)
        attempt = Attempt(
            rollout_id=rollout.rollout_id,
            attempt_id=new_attempt_id(),
            sequence_id=(latest.sequence_id if latest else 0) + 1,
            start_time=now,
            status="preparing",
            worker_id=worker_id,
        )
        await tx.insert_attempt(attempt)
        return attempt

    # ------------------------------------------------------------------ rollouts and queue

    async def start_rollout(
        self,
        input: Any,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
        worker_id: str | None = None,
    ) -> AttemptedRollout:
        cfg = _config(config)
        if mode not in (None, "train", "val", "test"):
            raise InvalidRequestError(f"invalid rollout mode {mode!r}; allowed: train, val, test")
        now = time.time()
        async with self._tx(write=True) as tx:
            if resources_id is None:
                resources_id = await self._latest_resources_id(tx)
            rollout = Rollout(
                rollout_id=new_rollout_id(),
                input=input,
                start_time=now,
                mode=mode,
                resources_id=resources_id,
                status="preparing",
                config=cfg,
                metadata=dict(metadata) if metadata is not None else {},
            )
            attempt = Attempt(
                rollout_id=rollout.rollout_id,
                attempt_id=new_attempt_id(),
                sequence_id=1,
                start_time=now,
                status="preparing",
                worker_id=worker_id,
            )
            await tx.insert_rollouts([rollout])
            await tx.insert_attempt(attempt)
            await self._sync_worker(tx, attempt, now)
        return AttemptedRollout(**rollout.model_dump(), attempt=attempt)

    async def enqueue_rollout(
        self,
        input: Any,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Rollout:
        try:
            req = EnqueueRolloutRequest(
                input=input,
                mode=mode,
                resources_id=resources_id,
                config=_config(config),
                metadata=metadata,
            )
        except ValidationError as e:
            raise _invalid("rollout", e) from None
        return (await self.enqueue_many_rollouts([req]))[0]

    async def enqueue_many_rollouts(
        self, rollouts: Sequence[EnqueueRolloutRequest]
    ) -> Sequence[Rollout]:
        try:
            requests = [
                EnqueueRolloutRequest.model_validate(
                    r.model_dump() if isinstance(r, EnqueueRolloutRequest) else r
                )
                for r in rollouts
            ]
        except ValidationError as e:
            raise _invalid("rollout", e) from None
        configs = [_config(r.config) for r in requests]
        if not requests:
            return []
        async with self._tx(write=True) as tx:
            latest = await self._latest_resources_id(tx)
            now = time.time()
            created = [
                Rollout(
                    rollout_id=new_rollout_id(),
                    input=r.input,
                    start_time=now,
                    mode=r.mode,
                    resources_id=r.resources_id if r.resources_id is not None else latest,
                    status="queuing",
                    config=cfg,
                    metadata=dict(r.metadata) if r.metadata is not None else {},
                )
                for r, cfg in zip(requests, configs, strict=True)
            ]
            await tx.insert_rollouts(created)
        return created

    async def dequeue_rollout(self, worker_id: str | None = None) -> AttemptedRollout | None:
        got = await self.dequeue_many_rollouts(limit=1, worker_id=worker_id)
        return got[0] if got else None

    async def dequeue_many_rollouts(
        self, *, limit: int = 1, worker_id: str | None = None
    ) -> Sequence[AttemptedRollout]:
        if limit <= 0:
            return []
        async with self._tx(write=True) as tx:
            return await self._dequeue_tx(tx, limit, worker_id)

    async def _dequeue_tx(
        self, tx: StoreTx, limit: int, worker_id: str | None
    ) -> list[AttemptedRollout]:
        claimed: list[AttemptedRollout] = []
        now = time.time()
        for rollout in await tx.claim_queued(limit):
            attempt = await self._new_attempt(tx, rollout, worker_id, now)
            rollout = rollout.model_copy(update={"status": "preparing"})
            await tx.save_rollout(rollout)
            claimed.append(AttemptedRollout(**rollout.model_dump(), attempt=attempt))
        if worker_id is not None:
            if claimed:
                await self._sync_worker(tx, claimed[-1].attempt, now, dequeue=True)
            else:
                worker = await tx.get_worker(worker_id)
                await tx.save_worker(lc.worker_found_nothing(worker, worker_id, now))
        return claimed

    def exchange_writes(
        self, updates: Sequence[AttemptUpdate], limit: int, worker_id: str | None
    ) -> Callable[[StoreTx], Awaitable[tuple[list[Attempt | StoreError], list[AttemptedRollout]]]]:
        """A runner exchange's writes for ``add_many_spans(then=...)``: the updates in order
        (each one's StoreError is its result: it is raised before that update writes
        anything), then a dequeue of up to ``limit`` rollouts for ``worker_id``."""

        async def writes(
            tx: StoreTx,
        ) -> tuple[list[Attempt | StoreError], list[AttemptedRollout]]:
            results: list[Attempt | StoreError] = []
            for u in updates:
                try:
                    results.append(
                        await self._update_attempt_tx(tx, u.rollout_id, u.attempt_id, u.changes())
                    )
                except StoreError as e:
                    results.append(e)
            claimed = await self._dequeue_tx(tx, limit, worker_id) if limit > 0 else []
            return results, claimed

        return writes

    async def start_attempt(
        self, rollout_id: str, worker_id: str | None = None
    ) -> AttemptedRollout:
        async with self._tx(write=True) as tx:
            now = time.time()
            rollout = await self._lock_rollout(tx, rollout_id)
            attempt = await self._new_attempt(tx, rollout, worker_id, now)
            rollout = rollout.model_copy(update={"status": "preparing"})
            await tx.save_rollout(rollout)
            await self._sync_worker(tx, attempt, now)
        return AttemptedRollout(**rollout.model_dump(), attempt=attempt)

    async def query_rollouts(
        self,
        *,
        status_in: Sequence[RolloutStatus] | None = None,
        rollout_id_in: Sequence[str] | None = None,
        rollout_id_contains: str | None = None,
        filter_logic: Literal["and", "or"] = "and",
        sort_by: str | None = None,
        sort_order: Literal["asc", "desc"] = "asc",
        limit: int = -1,
        offset: int = 0,
        status: Sequence[RolloutStatus] | None = None,
        rollout_ids: Sequence[str] | None = None,
    ) -> PaginatedResult[Rollout]:
        validate_page(
            limit=limit,
            offset=offset,
            sort_by=sort_by,
            sort_order=sort_order,
            sortable=ROLLOUT_SORT_FIELDS,
            what="rollouts",
            filter_logic=filter_logic,
        )
        statuses = status_in if status_in is not None else status
        ids = rollout_id_in if rollout_id_in is not None else rollout_ids
        conds: list[Cond] = []
        if statuses is not None:
            conds.append(Cond("status", "within", list(statuses)))
        if ids is not None:
            conds.append(Cond("rollout_id", "within", list(ids)))
        if rollout_id_contains is not None:
            conds.append(Cond("rollout_id", "contains", rollout_id_contains))
        q = Query(
            conds=conds,
            logic=filter_logic,
            sort_by=sort_by,
            sort_order=sort_order,
            limit=limit,
            offset=offset,
        )
        async with self._tx(write=False) as tx:
            items, total = await tx.query_rollouts(q)
            latest = await tx.latest_attempts([r.rollout_id for r in items])
        return PaginatedResult.model_construct(
            items=[_with_attempt(r, latest.get(r.rollout_id)) for r in items],
            limit=limit,
            offset=offset,
            total=total,
        )

    async def get_rollout_by_id(self, rollout_id: str) -> Rollout | None:
        async with self._tx(write=False) as tx:
            found = await tx.get_rollouts([rollout_id])
            if rollout_id not in found:
                return None
            latest = await tx.latest_attempts([rollout_id])
        return _with_attempt(found[rollout_id], latest.get(rollout_id))

    async def update_rollout(
        self,
        rollout_id: str,
        input: Any = UNSET,
        mode: RolloutMode | None = UNSET,
        resources_id: str | None = UNSET,
        status: RolloutStatus = UNSET,
        config: RolloutConfig = UNSET,
        metadata: dict[str, Any] | None = UNSET,
    ) -> Rollout:
        changes = given(
            input=input,
            mode=mode,
            resources_id=resources_id,
            status=status,
            config=config,
            metadata=metadata,
        )
        for name in ("status", "config"):
            if name in changes and changes[name] is None:
                raise InvalidRequestError(f"rollout {name} cannot be null")
        if "config" in changes:
            changes["config"] = changes["config"].model_dump()
        async with self._tx(write=True) as tx:
            now = time.time()
            rollout = await self._lock_rollout(tx, rollout_id)
            data = {**_plain_rollout(rollout).model_dump(), **changes}
            if "status" in changes and changes["status"] in FINISHED_ROLLOUT_STATUSES:
                data["end_time"] = now
            try:
                updated = Rollout.model_validate(data)
            except ValidationError as e:
                raise _invalid(f"update of rollout {rollout_id!r}", e) from None
            await tx.save_rollout(updated)
        if updated.status in FINISHED_ROLLOUT_STATUSES and "status" in changes:
            self._notify_finished()
        return updated

    async def wait_for_rollouts(
        self,
        *,
        rollout_ids: list[str],
        timeout: float | None = None,  # noqa: ASYNC109 - v0.3's signature
    ) -> list[Rollout]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event = self._finished
            async with self._tx(write=False) as tx:
                found = await tx.get_rollouts(list(rollout_ids))
            done = [
                found[r]
                for r in rollout_ids
                if r in found and found[r].status in FINISHED_ROLLOUT_STATUSES
            ]
            pending = [r for r in rollout_ids if r in found] if found else []
            if len(done) == len(pending):
                return done
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return done
            wait = (
                self._wait_poll_interval
                if remaining is None
                else min(self._wait_poll_interval, remaining)
            )
            try:
                await asyncio.wait_for(event.wait(), timeout=wait)
            except TimeoutError:
                pass

    # ------------------------------------------------------------------ attempts

    async def query_attempts(
        self,
        rollout_id: str,
        *,
        sort_by: str | None = "sequence_id",
        sort_order: Literal["asc", "desc"] = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Attempt]:
        validate_page(
            limit=limit,
            offset=offset,
            sort_by=sort_by,
            sort_order=sort_order,
            sortable=ATTEMPT_SORT_FIELDS,
            what="attempts",
        )
        q = Query(
            must=[Cond("rollout_id", "exact", rollout_id)],
            sort_by=sort_by,
            sort_order=sort_order,
            limit=limit,
            offset=offset,
        )
        async with self._tx(write=False) as tx:
            items, total = await tx.query_attempts(q)
        return PaginatedResult.model_construct(items=items, limit=limit, offset=offset, total=total)

    async def get_latest_attempt(self, rollout_id: str) -> Attempt | None:
        async with self._tx(write=False) as tx:
            return (await tx.latest_attempts([rollout_id])).get(rollout_id)

    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str,
        status: AttemptStatus = UNSET,
        worker_id: str = UNSET,
        last_heartbeat_time: float = UNSET,
        metadata: dict[str, Any] | None = UNSET,
    ) -> Attempt:
        changes = given(
            status=status,
            worker_id=worker_id,
            last_heartbeat_time=last_heartbeat_time,
            metadata=metadata,
        )
        async with self._tx(write=True) as tx:
            return await self._update_attempt_tx(tx, rollout_id, attempt_id, changes)

    async def _update_attempt_tx(
        self, tx: StoreTx, rollout_id: str, attempt_id: str, changes: dict[str, Any]
    ) -> Attempt:
        """``update_attempt`` in ``tx``; its StoreErrors are raised before anything is written
        (a caller may go on with the transaction after one)."""
        for name, value in changes.items():
            if value is None:
                raise InvalidRequestError(f"attempt {name} cannot be null")
        now = time.time()
        rollout = await self._lock_rollout(tx, rollout_id)
        latest = (await tx.latest_attempts([rollout_id])).get(rollout_id)
        if latest is None:
            raise NotFoundError(f"rollout {rollout_id!r} has no attempts")
        if attempt_id == "latest" or attempt_id == latest.attempt_id:
            attempt = latest
        else:
            found = await tx.get_attempts([(rollout_id, attempt_id)])
            if (rollout_id, attempt_id) not in found:
                raise NotFoundError(f"attempt {attempt_id!r} not found for rollout {rollout_id!r}")
            attempt = found[(rollout_id, attempt_id)]
        data = {**attempt.model_dump(), **changes}
        if changes.get("status") in lc.ENDED_ATTEMPT_STATUSES:
            data["end_time"] = now
        try:
            updated = Attempt.model_validate(data)
        except ValidationError as e:
            raise _invalid(f"update of attempt {attempt_id!r}", e) from None
        await tx.save_attempt(updated)
        if updated.attempt_id == latest.attempt_id:
            latest = updated
        await self._propagate(tx, rollout, updated, latest, now)
        if changes.get("worker_id") or ("status" in changes and updated.worker_id):
            await self._sync_worker(tx, updated, now)
        return updated

    async def scan_health(self) -> list[Attempt]:
        """Mark attempts past their timeout/unresponsive limits, and propagate.

        Why two phases: finding candidates is one query in a *read* transaction through the
        index of due times (``StoreTx.health_due``), so its cost follows the rollouts due, not
        the idle running ones, and ingestion never waits on it; the write transaction then
        locks only the rollouts found due (in batches), re-checks each under its lock with
        ``health_verdict`` (another server or call may have moved it; a due time is a lower
        bound, so the index may only add candidates, never miss one) and updates only those
        that changed; the due times of candidates left unchanged are recomputed."""
        now = time.time()
        async with self._scan_tx() as tx:
            due = await tx.health_due(now)
        changed: list[Attempt] = []
        for start in range(0, len(due), _SCAN_BATCH):
            async with self._tx(write=True) as tx:
                locked = await tx.get_rollouts(due[start : start + _SCAN_BATCH], for_update=True)
                latest_all = await tx.latest_attempts(sorted(locked))
                not_due: list[str] = []
                for rollout_id in sorted(locked):
                    rollout = locked[rollout_id]
                    attempt = latest_all.get(rollout_id)
                    if attempt is None or rollout.status not in RUNNING_ROLLOUT_STATUSES:
                        not_due.append(rollout_id)
                        continue
                    verdict = lc.health_verdict(rollout, attempt, now)
                    if verdict is None:
                        not_due.append(rollout_id)
                        continue
                    attempt = attempt.model_copy(update={"status": verdict})
                    await tx.save_attempt(attempt)
                    await self._propagate(tx, rollout, attempt, attempt, now)
                    await self._sync_worker(tx, attempt, now)
                    changed.append(attempt)
                if not_due:  # stale due times (e.g. of an older attempt): recompute them
                    await tx.refresh_due(not_due)
        return changed

    # ------------------------------------------------------------------ spans

    async def add_span(self, span: Span) -> Span | None:
        result = await self.add_many_spans([span])
        outcome = result.outcomes[0]
        if outcome.status == "rejected":
            raise NotFoundError(outcome.reason or "span rejected")
        return outcome.span.to_span() if outcome.status == "stored" else None

    async def add_many_spans(
        self,
        spans: Sequence[Span | SpanRow],
        *,
        assign_sequence_ids: Collection[int] = (),
        then: Callable[[StoreTx], Awaitable[Any]] | None = None,
    ) -> AddSpansResult:
        """Store spans: :class:`SpanRow` objects (the OTLP intake; a row whose
        ``sequence_id_pending`` is set gets an id issued) or ``Span`` models (the v0.3 API;
        ``assign_sequence_ids`` says which get one, and the issued id is written into them).
        Models become rows here: everything below sees rows only.

        ``then(tx)``: more writes in the transaction that stores these spans, after them, so
        that they commit together or not at all (a runner's statuses: readers never see one
        without its spans); its result is in :attr:`AddSpansResult.then_result`. It runs
        even when no span is left to store (in its own transaction)."""
        rows, models = _as_rows(spans, assign_sequence_ids)
        result = await self._add_rows(rows, then)
        for i, model in models:  # the v0.3 API: issued ids are written into the models
            model.sequence_id = rows[i].sequence_id
        return result

    async def _add_rows(
        self, spans: list[SpanRow], then: Callable[[StoreTx], Awaitable[Any]] | None
    ) -> AddSpansResult:
        assign = frozenset(i for i, row in enumerate(spans) if row.sequence_id_pending)
        outcomes: list[SpanOutcome | None] = [None] * len(spans)
        keys = [(s.rollout_id, s.attempt_id, s.span_id) for s in spans]
        candidates: list[int]
        if len(set(keys)) == len(keys) and all(r and a for r, a, _ in keys):
            candidates = list(range(len(spans)))  # the common batch: all owned, all distinct
        else:
            seen: set[tuple[str, str, str]] = set()
            candidates = []
            for i, (s, key) in enumerate(zip(spans, keys, strict=True)):
                if not s.rollout_id or not s.attempt_id:
                    outcomes[i] = SpanOutcome("rejected", s, "span has no rollout_id or attempt_id")
                    continue
                if key in seen:
                    outcomes[i] = SpanOutcome("duplicate", s)
                    continue
                seen.add(key)
                candidates.append(i)
        job = _SpanJob(spans, candidates, outcomes, assign, then=then)
        if candidates and self.group_commit:
            await self._group_add(job)
        elif candidates or then is not None:
            async with self._tx(write=True) as tx:
                await self._add_spans_tx(tx, job)
        if job.all_stored:
            result = AddSpansResult.all_stored(spans)  # type: ignore[arg-type]
        else:
            result = AddSpansResult([o for o in outcomes if o is not None])
        result.then_result = job.then_result
        return result

    async def _group_add(self, job: _SpanJob) -> None:
        """Group commit: span batches that arrive while a transaction is running are stored
        together in the next one, so N concurrent batches cost one commit (one fsync), not N.
        Each caller still returns only after the transaction holding its spans committed."""
        job.fut = asyncio.get_running_loop().create_future()
        self._span_jobs.append(job)
        if self._span_flusher is None or self._span_flusher.done():
            self._span_flusher = asyncio.get_running_loop().create_task(self._flush_span_jobs())
        await job.fut

    async def _flush_span_jobs(self) -> None:
        while self._span_jobs:
            jobs, self._span_jobs = self._span_jobs, []
            try:
                async with self._tx(write=True) as tx:
                    for job in jobs:
                        await self._add_spans_tx(tx, job)
            except Exception:
                # Something in the group failed: redo each batch in its own transaction, so
                # that only the failing caller sees the error.
                for job in jobs:
                    job.all_stored = False
                    for i in job.candidates:
                        job.outcomes[i] = None
                    try:
                        async with self._tx(write=True) as tx:
                            await self._add_spans_tx(tx, job)
                    except Exception as e:
                        job.finish(e)
                    else:
                        job.finish(None)
                continue
            for job in jobs:
                job.finish(None)

    async def _add_spans_tx(self, tx: StoreTx, job: _SpanJob) -> None:
        if job.candidates:
            await self._add_candidates_tx(tx, job)
        if job.then is not None:
            job.then_result = await job.then(tx)

    async def _add_candidates_tx(self, tx: StoreTx, job: _SpanJob) -> None:
        # The spans are handled per attempt (one group, in the common OTLP batch): a few passes
        # over the spans, not one per rule (this runs for every span the intake receives).
        spans, outcomes = job.spans, job.outcomes
        now = time.time()
        owners = [(spans[i].rollout_id, spans[i].attempt_id) for i in job.candidates]
        groups: dict[tuple[str, str], list[int]] = {}
        if len(set(owners)) == 1:
            groups[owners[0]] = list(job.candidates)
        else:
            for i, key in zip(job.candidates, owners, strict=True):
                group = groups.get(key)
                if group is None:
                    groups[key] = [i]
                else:
                    group.append(i)
        rollout_ids = sorted({r for r, _ in groups})
        rollouts = await tx.get_rollouts(rollout_ids, for_update=True)
        pairs = sorted(groups)
        attempts = await tx.get_attempts(pairs)
        latest = await tx.latest_attempts([r for r in rollout_ids if r in rollouts])

        # Our extension: register unknown rollouts (and, for those, unknown attempts).
        for rollout_id, attempt_id in pairs:
            if (rollout_id, attempt_id) in attempts:
                continue
            rollout = rollouts.get(rollout_id)
            if rollout is None and not self.auto_register_rollouts:
                continue
            if rollout is not None and not (rollout.metadata or {}).get(lc.AUTO_REGISTERED_KEY):
                continue
            first = min(
                (spans[i] for (r, _), g in groups.items() if r == rollout_id for i in g),
                key=lambda s: s.start_time if s.start_time is not None else now,
            )
            start = min(first.start_time or now, now)
            if rollout is None:
                rollout = Rollout(
                    rollout_id=rollout_id,
                    input=None,
                    start_time=start,
                    status="running",
                    config=RolloutConfig(timeout_seconds=self.auto_rollout_timeout),
                    metadata={lc.AUTO_REGISTERED_KEY: True},
                )
                await tx.insert_rollouts([rollout], if_absent=True)
                rollout = (await tx.get_rollouts([rollout_id], for_update=True))[rollout_id]
                rollouts[rollout_id] = rollout
            # Read under the rollout's lock: another server may have registered attempts.
            prev = (await tx.latest_attempts([rollout_id])).get(rollout_id)
            attempt = Attempt(
                rollout_id=rollout_id,
                attempt_id=attempt_id,
                sequence_id=(prev.sequence_id if prev else 0) + 1,
                start_time=start,
                status="running",
            )
            await tx.insert_attempt(attempt, if_absent=True)
            got = await tx.get_attempts([(rollout_id, attempt_id)])
            attempts[(rollout_id, attempt_id)] = got[(rollout_id, attempt_id)]
            latest = {**latest, **await tx.latest_attempts([rollout_id])}

        accepted_groups: dict[tuple[str, str], list[int]] = {}
        for key, idxs in groups.items():
            rollout_id, attempt_id = key
            if rollout_id not in rollouts:
                reason = f"rollout {rollout_id!r} not found"
            elif key not in attempts:
                reason = f"attempt {attempt_id!r} not found for rollout {rollout_id!r}"
            else:
                accepted_groups[key] = idxs
                continue
            for i in idxs:
                outcomes[i] = SpanOutcome("rejected", spans[i], reason)
        if not accepted_groups:
            return
        # Sequence ids: ids carried by spans move the rollout's counter up; spans that asked
        # for one get the next ids, issued in this same transaction, in arrival order.
        max_seq: dict[str, int] = {}
        need: dict[str, list[int]] = {}
        assign = job.assign
        n_accepted = sum(len(g) for g in accepted_groups.values())
        if len(accepted_groups) == 1 and len(assign) == len(spans):
            (((rollout_id, _), idxs),) = accepted_groups.items()
            need[rollout_id] = idxs  # all of one rollout, all to issue
        else:
            for (rollout_id, _), idxs in accepted_groups.items():
                carried = [spans[i].sequence_id for i in idxs if i not in assign]
                if len(carried) < len(idxs):
                    need.setdefault(rollout_id, []).extend(i for i in idxs if i in assign)
                if carried:
                    max_seq[rollout_id] = max(max_seq.get(rollout_id, 0), max(carried))
        await tx.raise_span_seqs(max_seq)
        for rollout_id, idxs in sorted(need.items()):
            if len(accepted_groups) > 1:
                idxs.sort()  # back to arrival order across the rollout's attempts
            top = await tx.bump_span_seq(rollout_id, len(idxs))
            first_seq = top - len(idxs) + 1
            for k, i in enumerate(idxs):
                spans[i].sequence_id = first_seq + k

        inserted = await tx.insert_spans(
            {key: [spans[i] for i in idxs] for key, idxs in accepted_groups.items()}
        )
        new_groups: dict[tuple[str, str], list[int]]
        if sum(len(ids) for ids in inserted.values()) == n_accepted:  # no duplicates: common
            if n_accepted == len(spans):
                job.all_stored = True
            else:
                for idxs in accepted_groups.values():
                    for i in idxs:
                        outcomes[i] = SpanOutcome("stored", spans[i])
            new_groups = accepted_groups
        else:
            new_groups = {}
            for key, idxs in accepted_groups.items():
                ids = inserted.get(key, ())
                for i in idxs:
                    s = spans[i]
                    if s.span_id in ids:
                        outcomes[i] = SpanOutcome("stored", s)
                        new_groups.setdefault(key, []).append(i)
                    else:
                        outcomes[i] = SpanOutcome("duplicate", s)
        if not new_groups:
            return

        # Heartbeat and status of each attempt that received spans. The heartbeats are saved
        # together (one statement), before any rollout write so the order of writes is kept.
        heartbeats: list[Attempt] = []
        for (rollout_id, attempt_id), idxs in new_groups.items():
            rollout = rollouts[rollout_id]
            attempt = attempts[(rollout_id, attempt_id)]
            update: dict[str, Any] = {"last_heartbeat_time": now}
            if attempt.status in ("preparing", "unresponsive"):
                update["status"] = "running"
            attempt = attempt.model_copy(update=update)
            is_latest = latest.get(rollout_id) is not None and (
                latest[rollout_id].attempt_id == attempt_id
            )
            auto = bool((rollout.metadata or {}).get(lc.AUTO_REGISTERED_KEY))
            rollout_moves = is_latest and rollout.status in ("preparing", "queuing", "requeuing")
            if heartbeats and (auto or rollout_moves):
                await tx.save_attempts(heartbeats)
                heartbeats = []
            if rollout_moves:
                rollout = await self._set_rollout_status(tx, rollout, "running", now)
            if auto:
                found = None
                if rollout.input is None:  # the run's root span carries it (once per rollout)
                    found = next(
                        (f for i in idxs if (f := lc.production_input(spans[i])) is not None),
                        None,
                    )
                if found is not None:
                    row, extra = found
                    rollout = rollout.model_copy(
                        update={"input": row, "metadata": {**rollout.metadata, **extra}}
                    )
                    await tx.save_rollout(rollout)
                verdicts = [v for i in idxs if (v := lc.root_span_verdict(spans[i])) is not None]
                if verdicts and attempt.status not in lc.ENDED_ATTEMPT_STATUSES:
                    attempt = attempt.model_copy(update={"status": verdicts[-1], "end_time": now})
                    await tx.save_attempt(attempt)
                    if is_latest:
                        rollout = await self._propagate(tx, rollout, attempt, attempt, now)
                    rollouts[rollout_id] = rollout
                    continue
                await tx.save_attempt(attempt)
            else:
                heartbeats.append(attempt)
            rollouts[rollout_id] = rollout
        await tx.save_attempts(heartbeats)

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

    # ------------------------------------------------------------------ resources

    @staticmethod
    def _resources(resources: Any) -> NamedResources:
        if not isinstance(resources, dict):
            raise InvalidRequestError("resources must be a mapping of name -> resource")
        plain = {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in resources.items()}
        try:
            return _RESOURCES_ADAPTER.validate_python(plain)
        except ValidationError as e:
            raise _invalid("resources", e) from None

    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate:
        named = self._resources(resources)
        now = time.time()
        update = ResourcesUpdate(
            resources_id=new_resources_id(),
            create_time=now,
            update_time=now,
            version=1,
            resources=named,
        )
        async with self._tx(write=True) as tx:
            await tx.save_resources(update)
        return update

    async def update_resources(
        self, resources_id: str, resources: NamedResources
    ) -> ResourcesUpdate:
        named = self._resources(resources)
        async with self._tx(write=True) as tx:
            now = time.time()
            existing = await tx.get_resources(resources_id)
            if existing is None:
                update = ResourcesUpdate(
                    resources_id=resources_id,
                    create_time=now,
                    update_time=now,
                    version=1,
                    resources=named,
                )
            else:
                update = existing.model_copy(
                    update={
                        "resources": named,
                        "update_time": max(now, existing.update_time),
                        "version": existing.version + 1,
                    }
                )
            await tx.save_resources(update)
        return update

    async def get_resources_by_id(self, resources_id: str) -> ResourcesUpdate | None:
        async with self._tx(write=False) as tx:
            return await tx.get_resources(resources_id)

    async def get_latest_resources(self) -> ResourcesUpdate | None:
        async with self._tx(write=False) as tx:
            return await tx.latest_resources()

    async def query_resources(
        self,
        *,
        resources_id: str | None = None,
        resources_id_contains: str | None = None,
        sort_by: str | None = None,
        sort_order: Literal["asc", "desc"] = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[ResourcesUpdate]:
        validate_page(
            limit=limit,
            offset=offset,
            sort_by=sort_by,
            sort_order=sort_order,
            sortable=RESOURCES_SORT_FIELDS,
            what="resources",
        )
        conds = []
        if resources_id is not None:
            conds.append(Cond("resources_id", "exact", resources_id))
        if resources_id_contains is not None:
            conds.append(Cond("resources_id", "contains", resources_id_contains))
        q = Query(conds=conds, sort_by=sort_by, sort_order=sort_order, limit=limit, offset=offset)
        async with self._tx(write=False) as tx:
            items, total = await tx.query_resources(q)
        return PaginatedResult.model_construct(items=items, limit=limit, offset=offset, total=total)

    # ------------------------------------------------------------------ workers

    async def query_workers(
        self,
        *,
        status_in: Sequence[WorkerStatus] | None = None,
        worker_id_contains: str | None = None,
        filter_logic: Literal["and", "or"] = "and",
        sort_by: str | None = None,
        sort_order: Literal["asc", "desc"] = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Worker]:
        validate_page(
            limit=limit,
            offset=offset,
            sort_by=sort_by,
            sort_order=sort_order,
            sortable=WORKER_SORT_FIELDS,
            what="workers",
            filter_logic=filter_logic,
        )
        conds = []
        if status_in is not None:
            conds.append(Cond("status", "within", list(status_in)))
        if worker_id_contains is not None:
            conds.append(Cond("worker_id", "contains", worker_id_contains))
        q = Query(
            conds=conds,
            logic=filter_logic,
            sort_by=sort_by,
            sort_order=sort_order,
            limit=limit,
            offset=offset,
        )
        async with self._tx(write=False) as tx:
            items, total = await tx.query_workers(q)
        return PaginatedResult.model_construct(items=items, limit=limit, offset=offset, total=total)

    async def get_worker_by_id(self, worker_id: str) -> Worker | None:
        async with self._tx(write=False) as tx:
            return await tx.get_worker(worker_id)

    async def update_worker(
        self, worker_id: str, heartbeat_stats: dict[str, Any] = UNSET
    ) -> Worker:
        if heartbeat_stats is None:
            raise InvalidRequestError("worker heartbeat_stats cannot be null")
        async with self._tx(write=True) as tx:
            worker = await tx.get_worker(worker_id) or Worker(worker_id=worker_id)
            update: dict[str, Any] = {"last_heartbeat_time": time.time()}
            if heartbeat_stats is not UNSET:
                update["heartbeat_stats"] = dict(heartbeat_stats)
            worker = worker.model_copy(update=update)
            await tx.save_worker(worker)
        return worker
