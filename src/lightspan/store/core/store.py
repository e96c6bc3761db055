"""The LightningStore's behaviour, written once over the transactional primitives of ``tx.py``.

Why one implementation for all backends: the conformance suite proves the backends identical,
and the simplest way to make that true is that only storage differs. Each public method is one
transaction (so it appears atomic), validates its arguments first (typed errors, see
``base.py``), and applies the rules of :mod:`lightspan.store.core.lifecycle`. Queries arrive
already checked, as one :class:`~lightspan.store.api.query.Query` through the ``_query_*``
hooks: ``base.py`` writes each query method's signature once, for the client as well.

The background health scanner (:class:`~lightspan.store.core.scanner.HealthScanner`) calls
:meth:`CoreStore.scan_health` every ``scan_interval`` seconds; nothing is checked lazily.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from pydantic import TypeAdapter, ValidationError

from lightspan.store.api.base import (
    UNSET,
    AttemptUpdate,
    InvalidRequestError,
    LightningStore,
    NotFoundError,
    StoreError,
    given,
    paginated,
)
from lightspan.store.api.models import (
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
    Worker,
    new_attempt_id,
    new_resources_id,
    new_rollout_id,
)
from lightspan.store.api.query import Query
from lightspan.store.core import lifecycle as lc
from lightspan.store.core.scanner import HealthScanner
from lightspan.store.core.span_reads import SpanReads
from lightspan.store.core.span_writes import SpanJob, SpanWrites
from lightspan.store.core.tx import StoreTx

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


class CoreStore(SpanWrites, SpanReads, LightningStore):
    """LightningStore semantics over a backend's :meth:`_tx` transactions (span writes and reads
    in ``span_writes.py`` and ``span_reads.py``)."""

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
        self._span_jobs: list[SpanJob] = []
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
        self,
        tx: StoreTx,
        rollout: Rollout,
        worker_id: str | None,
        now: float,
        latest: Attempt | None,
    ) -> Attempt:
        """The rollout's next attempt; ``latest``: its latest attempt, read under its lock."""
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
        rollouts = await tx.claim_queued(limit)
        latest = await tx.latest_attempts([r.rollout_id for r in rollouts])  # one read for all
        for rollout in rollouts:
            attempt = await self._new_attempt(
                tx, rollout, worker_id, now, latest.get(rollout.rollout_id)
            )
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
        self,
        updates: Sequence[AttemptUpdate],
        limit: int,
        worker_id: str | None,
        workers: Mapping[str, dict[str, Any]] | None = None,
    ) -> Callable[[StoreTx], Awaitable[tuple[list[Attempt | StoreError], list[AttemptedRollout]]]]:
        """A runner exchange's writes for ``add_many_spans(then=...)``: ``workers``' heartbeats
        (worker id -> heartbeat stats, each as :meth:`update_worker`), the updates in order
        (each one's StoreError is its result: it is raised before that update writes
        anything), then a dequeue of up to ``limit`` rollouts for ``worker_id``."""

        async def writes(
            tx: StoreTx,
        ) -> tuple[list[Attempt | StoreError], list[AttemptedRollout]]:
            now = time.time()
            for wid, stats in (workers or {}).items():
                await self._heartbeat_tx(tx, wid, stats, now)
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
            latest = (await tx.latest_attempts([rollout_id])).get(rollout_id)
            attempt = await self._new_attempt(tx, rollout, worker_id, now, latest)
            rollout = rollout.model_copy(update={"status": "preparing"})
            await tx.save_rollout(rollout)
            await self._sync_worker(tx, attempt, now)
        return AttemptedRollout(**rollout.model_dump(), attempt=attempt)

    async def _query_rollouts(self, q: Query) -> PaginatedResult[Rollout]:
        async with self._tx(write=False) as tx:
            items, total = await tx.query_rollouts(q)
            latest = await tx.latest_attempts([r.rollout_id for r in items])
        return paginated(q, [_with_attempt(r, latest.get(r.rollout_id)) for r in items], total)

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

    async def _query_attempts(self, q: Query) -> PaginatedResult[Attempt]:
        async with self._tx(write=False) as tx:
            items, total = await tx.query_attempts(q)
        return paginated(q, items, total)

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

    async def _query_resources(self, q: Query) -> PaginatedResult[ResourcesUpdate]:
        async with self._tx(write=False) as tx:
            items, total = await tx.query_resources(q)
        return paginated(q, items, total)

    # ------------------------------------------------------------------ workers

    async def _query_workers(self, q: Query) -> PaginatedResult[Worker]:
        async with self._tx(write=False) as tx:
            items, total = await tx.query_workers(q)
        return paginated(q, items, total)

    async def get_worker_by_id(self, worker_id: str) -> Worker | None:
        async with self._tx(write=False) as tx:
            return await tx.get_worker(worker_id)

    async def update_worker(
        self, worker_id: str, heartbeat_stats: dict[str, Any] = UNSET
    ) -> Worker:
        if heartbeat_stats is None:
            raise InvalidRequestError("worker heartbeat_stats cannot be null")
        async with self._tx(write=True) as tx:
            return await self._heartbeat_tx(tx, worker_id, heartbeat_stats, time.time())

    async def _heartbeat_tx(
        self, tx: StoreTx, worker_id: str, heartbeat_stats: dict[str, Any], now: float
    ) -> Worker:
        """Create or refresh a worker: its heartbeat time, and its stats unless UNSET."""
        worker = await tx.get_worker(worker_id) or Worker(worker_id=worker_id)
        update: dict[str, Any] = {"last_heartbeat_time": now}
        if heartbeat_stats is not UNSET:
            update["heartbeat_stats"] = dict(heartbeat_stats)
        worker = worker.model_copy(update=update)
        await tx.save_worker(worker)
        return worker
