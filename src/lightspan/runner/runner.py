"""``WorkflowRunner``: runs a workflow for every rollout an optimizer queues in a LightningStore.

Loop of each worker (Agent Lightning's ``LitAgentRunner`` protocol, v0.3): ``dequeue_rollout``
-> resolve the rollout's resources (its ``resources_id``, else the latest set of this workflow,
see :mod:`lightspan.runner.resources`) -> map its input (:class:`~lightspan.runner.InputMapping`)
-> run the workflow (spans tagged with the rollout/attempt ids, prompts and completions
captured, the evaluator's reward as an ``agentlightning.annotation`` span) -> deliver the
attempt's spans -> ``update_attempt(succeeded|failed|timeout)``.

Guarantee: **all spans of an attempt are in the store before its status says finished.** The
runner's span pipeline keeps them per attempt (:mod:`lightspan.runner.spans`) and the status
update is sent only after the store acknowledged them; if the store is unreachable the runner
keeps the spans and retries, and never reports the status first.

Shared requests (``share_requests=True``, the default), so that a runner's store calls cost
fewer round trips and fewer commits (fsyncs) per rollout. Against our store server, one
request (:class:`~lightspan.runner.exchange.Exchange`, the ``runner/exchange`` extension)
carries everything the workers want while the previous one is in flight: each finished
attempt's last spans and final status (the server stores the spans before it applies the
status) and a dequeue for every idle worker. Elsewhere (``agl store``, in-process stores) the
v0.3 calls are shared call by call: workers that want a rollout at the same time share one
``dequeue_many_rollouts(limit=k)`` call, span deliveries of several attempts that are due
together share one OTLP request (:class:`~lightspan.runner.spans.SpanSink`), then each status
is its own ``update_attempt``. Either way the attempts are claimed under the caller's worker
id (the worker that ran each one is named in its final update), and a worker reports a
finished attempt (spans, then status) in a task beside its next dequeue and run, with at most
``report_depth`` reports in flight per worker, so the store can commit the next claim with the
previous report (SQLite group commit). ``serve`` returns only after every report is done.

Failures: an input that does not fit, an unknown ``resources_id``, a workflow that raises or
returns a failed result: the attempt is ``failed`` with the error in its metadata
(``{"error": ..., "error_type": ...}``) and the worker takes the next rollout. A rollout's
``config.timeout_seconds`` cancels the run and reports ``timeout``. Retries are the store's
(``max_attempts``/``retry_condition``): the runner never re-runs an attempt itself. A store
that goes away: dequeues back off and retry, span deliveries and status updates are retried
until the store is back (or the runner is stopped hard).

Heartbeats: every worker is registered and refreshed with ``update_worker`` every
``heartbeat_interval`` seconds; in-flight attempts deliver their spans so far or send
``update_attempt(last_heartbeat_time=...)`` at least every ``unresponsive_seconds / 3``.

Use from code (the trainer): in the store's event loop, ``async with runner.running():`` (or
``task = asyncio.create_task(runner.serve())`` and ``runner.request_stop()``); from another
thread, give it a :class:`~lightspan.store.api.client.LightningStoreClient` and run
``asyncio.run(runner.serve())`` in that thread (``request_stop()`` is thread-safe). An
in-process store object must be used from the loop it was started in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from lightspan.engine.runtime import RunResult, Workflow
from lightspan.runner.exchange import Exchange, ExchangeUnsupported, Report, UpdateRefused
from lightspan.runner.inputs import InputMapping
from lightspan.runner.resources import ResourcesProvider
from lightspan.runner.spans import DeliveryResult, SpanSink, runner_tracing
from lightspan.store.api.base import (
    AttemptUpdate,
    InvalidRequestError,
    LightningStore,
    NotFoundError,
)
from lightspan.store.api.client import LightningStoreClient
from lightspan.store.api.models import AttemptedRollout

__all__ = ["RunnerStats", "WorkflowRunner"]

log = logging.getLogger("lightspan.runner")


@dataclass
class RunnerStats:
    """What a :meth:`WorkflowRunner.serve` call did."""

    rollouts: int = 0
    """Rollouts dequeued (attempts started)."""
    succeeded: int = 0
    failed: int = 0
    timeout: int = 0
    spans: int = 0
    """Spans delivered to the store."""
    spans_rejected: int = 0
    store_errors: int = 0
    """Store calls that failed and were retried or given up (the runner kept serving)."""
    status_lost: int = 0
    """Attempts whose final status could not be reported (the store's health scan decides)."""
    workflow_s: float = 0.0
    """Seconds spent inside workflow runs (summed over workers)."""
    overhead_s: float = 0.0
    """Seconds per attempt outside the run: resources, input, span delivery, status update."""
    started_at: float = field(default_factory=time.time)
    elapsed_s: float = 0.0

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.timeout

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Stop(Exception):
    """Internal: a hard stop interrupted a store retry loop."""


_FALLBACK = object()
"""Internal: the exchange cannot take this report; use the v0.3 calls."""


class WorkflowRunner:
    """Serves a workflow's rollouts from a store with ``workers`` concurrent workers.

    ``store``: any :class:`~lightspan.store.LightningStore` (an in-process one, or
    :class:`~lightspan.store.api.client.LightningStoreClient` for a server: ours or ``agl store``).
    ``resources``: the provider that resolves rollout resources (default: a
    :class:`ResourcesProvider` over ``store`` with the workflow's own set as base,
    ``resources_ttl`` seconds of cache). ``input_mapping``: see :class:`InputMapping`.
    ``on_result(rollout, status, run_result_or_None)``: called in the loop after an attempt was
    reported (its spans and status are in the store), e.g. for an in-process trainer that wants
    ``RunResult`` cost/tokens/latency without reading spans back.
    ``report_depth``: how many finished attempts a worker may still be reporting (spans, then
    status, in the background) while it runs the next one (see :meth:`_run_attempt`).
    ``share_requests=False``: every worker makes its own calls, one at a time (dequeue, spans,
    status, then the next dequeue), as before these were shared; for comparison only.
    ``prefetch``: at most this many rollouts claimed ahead of idle workers over HTTP (default
    ``workers``; 0: never), so workers run while the store answers the next exchange request.
    The runner claims only what one round trip needs: ``workers x round trip / rollout time``,
    so for rollouts of seconds it claims none and leaves them to idle runners elsewhere; on a
    graceful stop the workers still run what was claimed ahead, on a hard stop it is reported
    failed (the store's retry rules apply).
    """

    def __init__(
        self,
        workflow: Workflow,
        store: LightningStore,
        *,
        workers: int = 1,
        worker_id_prefix: str | None = None,
        poll_interval: float = 0.2,
        heartbeat_interval: float = 10.0,
        input_mapping: InputMapping | Callable[[Any], tuple[Any, Any]] | None = None,
        resources: ResourcesProvider | None = None,
        resources_ttl: float = 2.0,
        capture_content: bool = True,
        store_retry_interval: float = 1.0,
        status_retry_seconds: float = 300.0,
        report_depth: int = 2,
        share_requests: bool = True,
        prefetch: int | None = None,
        on_result: Callable[[AttemptedRollout, str, RunResult | None], Any] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if prefetch is not None and prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        self.prefetch = workers if prefetch is None else prefetch
        if report_depth < 1:
            raise ValueError(f"report_depth must be >= 1, got {report_depth}")
        self.report_depth = report_depth
        self.share_requests = share_requests
        self.workflow = workflow
        self.store = store
        self.workers = workers
        prefix = worker_id_prefix or f"lightspan-{socket.gethostname()}-{os.getpid()}"
        self.worker_ids = [f"{prefix}-{i}" for i in range(workers)]
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.input_mapping = input_mapping or InputMapping()
        base = workflow.resources
        if isinstance(base, ResourcesProvider):
            base = base.base
        self.resources = resources or ResourcesProvider(
            store, workflow.name, base, ttl=resources_ttl
        )
        self.store_retry_interval = store_retry_interval
        self.on_result = on_result
        self.status_retry_seconds = status_retry_seconds
        self._provider, self._buffer, self._listener = runner_tracing(
            capture_content=capture_content
        )
        self._sink = SpanSink(store, coalesce=share_requests)
        self._exchange = (
            Exchange(
                store,
                on_orphan=self._abandon,
                max_spans=self._sink.max_batch,
                prefetch=self._prefetch_allowance,
                worker_id=self.worker_ids[0],
            )
            if share_requests and isinstance(store, LightningStoreClient)
            else None
        )
        self.stats = RunnerStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._hard = threading.Event()
        self._wake: asyncio.Event | None = None
        self._claimed = 0
        self._max: int | None = None
        self._active: dict[tuple[str, str], tuple[str, float | None]] = {}
        self._last_activity = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self._delivery_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._queue_empty = False
        self._poll_lock: asyncio.Lock | None = None
        self._dq_waiting: list[tuple[str, asyncio.Future[AttemptedRollout | None]]] = []
        self._dq_task: asyncio.Task[None] | None = None
        self.dequeue_requests = 0
        """Dequeue calls made to the store (for benchmarks and tests)."""
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._reports: dict[str, list[asyncio.Task[None]]] = {}
        self._rollout_s: float | None = None
        """Moving average of a rollout's time in a worker (run and overhead), for prefetch."""

    # ------------------------------------------------------------------ control

    def request_stop(self, *, hard: bool = False) -> None:
        """Stop dequeuing; in-flight rollouts finish and report (``hard``: they are cancelled
        and reported failed). Safe from any thread and from signal handlers."""
        self._stop.set()
        if hard:
            self._hard.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_stop, hard)

    def _on_stop(self, hard: bool) -> None:
        if self._wake is not None:
            self._wake.set()
        if hard:
            for t in self._tasks:
                t.cancel()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @contextlib.asynccontextmanager
    async def running(self, **serve_kw: Any) -> AsyncIterator[WorkflowRunner]:
        """Serve in a background task of the current loop; on exit, drain and wait."""
        task = asyncio.create_task(self.serve(**serve_kw), name="lightspan-runner")
        try:
            yield self
        finally:
            self.request_stop()
            await task

    def _prefetch_allowance(self) -> int:
        """Rollouts an exchange request may claim beyond the waiting workers': enough to keep
        the workers busy for one round trip (``workers x round trip / rollout time``), within
        ``prefetch`` and ``max_rollouts``; none while stopping or before both are measured."""
        ex, per = self._exchange, self._rollout_s
        if self.stopping or ex is None or ex.round_trip_s is None or not per:
            return 0
        want = min(self.prefetch, int(self.workers * ex.round_trip_s / per + 0.5))
        if self._max is not None:
            want = min(want, self._max - self._claimed - len(ex.ready))
        return max(0, want)

    # ------------------------------------------------------------------ serving

    async def serve(
        self,
        *,
        max_rollouts: int | None = None,
        idle_exit: float | None = None,
        handle_signals: bool = False,
    ) -> RunnerStats:
        """Serve until stopped, ``max_rollouts`` attempts were started, or nothing was queued
        for ``idle_exit`` seconds; in-flight rollouts always finish. ``handle_signals``: the
        first SIGTERM/SIGINT drains, the second cancels in-flight rollouts."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._poll_lock = asyncio.Lock()
        self._queue_empty = False
        self._stop.clear()
        self._hard.clear()
        self._max = max_rollouts
        self._claimed = 0
        self.stats = RunnerStats()
        self._last_activity = time.monotonic()
        installed: list[int] = []
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self._loop.add_signal_handler(sig, self._signal, sig)
                    installed.append(sig)
        # Registered beside the first dequeues, not before them (a store also creates a worker
        # on its first dequeue); serve returns only after every worker was registered.
        register = asyncio.create_task(self._register_workers(), name="lightspan-runner-register")
        heartbeat = asyncio.create_task(self._heartbeats(), name="lightspan-runner-heartbeat")
        self._tasks = [
            asyncio.create_task(self._worker(wid, idle_exit), name=f"lightspan-runner/{wid}")
            for wid in self.worker_ids
        ]
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._dq_task is not None:  # a shared dequeue whose workers were cancelled
                await asyncio.wait([self._dq_task])
            if self._exchange is not None:  # the same, in an exchange request
                await self._exchange.drain()
                await self._run_left_ahead()
            while self._side_tasks:
                await asyncio.gather(*self._side_tasks, return_exceptions=True)
            await register
        finally:
            if not register.done():  # stopped hard or failed: leave no task behind
                register.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await register
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            for sig in installed:
                self._loop.remove_signal_handler(sig)
            self.stats.elapsed_s = time.time() - self.stats.started_at
        log.info("runner stopped: %s", self.stats.as_dict())
        return self.stats

    def _signal(self, sig: int) -> None:
        hard = self.stopping
        log.warning(
            "runner: %s, %s",
            signal.Signals(sig).name,
            "cancelling in-flight rollouts" if hard else "draining (again to cancel)",
        )
        self.request_stop(hard=hard)

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _run_left_ahead(self) -> None:
        """Rollouts prefetched by a request that answered after the workers stopped: run them
        (graceful stop: what was claimed is run) or report them failed (hard stop)."""
        assert self._exchange is not None
        left = self._exchange.take_ready()
        if self._hard.is_set():
            for rollout in left:
                self._abandon(rollout)
            return
        self._claimed += len(left)
        await asyncio.gather(
            *(self._run_attempt(r, None, pipelined=False) for r in left), return_exceptions=True
        )

    async def _worker(self, worker_id: str, idle_exit: float | None) -> None:
        while True:
            if self.stopping:
                # Draining: rollouts claimed ahead were claimed for this runner; run them.
                ahead = self._exchange.ready if self._exchange is not None else None
                if not ahead or self._hard.is_set():
                    return
            if self._max is not None and self._claimed >= self._max:
                return
            self._claimed += 1
            try:
                rollout = await self._dequeue(worker_id)
            except Exception as e:
                self._claimed -= 1
                self.stats.store_errors += 1
                log.warning("runner %s: dequeue failed (%s); retrying", worker_id, e)
                await self._sleep(self.store_retry_interval)
                continue
            if rollout is None:
                self._claimed -= 1
                if (
                    idle_exit is not None
                    and not self._active
                    and time.monotonic() - self._last_activity >= idle_exit
                ):
                    log.info("runner: nothing queued for %.1fs, exiting", idle_exit)
                    self.request_stop()
                    return
                continue
            self._last_activity = time.monotonic()
            try:
                await self._run_attempt(rollout, worker_id, pipelined=self.share_requests)
            except asyncio.CancelledError:
                if not self._hard.is_set():
                    raise
                return
            except Exception:  # a bug of ours must not end the worker
                log.exception("runner %s: rollout %s not handled", worker_id, rollout.rollout_id)
            finally:
                self._last_activity = time.monotonic()

    async def _dequeue(self, worker_id: str) -> AttemptedRollout | None:
        """Claim a rollout. While the queue has work every idle worker dequeues at once; once
        a dequeue found it empty, only one idle worker polls (every ``poll_interval``) and the
        others wait for it, so an idle runner costs the store one request per interval, not one
        per worker."""
        if self._exchange is not None and self._exchange.ready:
            return self._exchange.ready.pop(0)
        if not self._queue_empty:
            rollout = await self._shared_dequeue(worker_id)
            if rollout is not None:
                return rollout
            self._queue_empty = True
        assert self._poll_lock is not None
        async with self._poll_lock:
            if self.stopping or not self._queue_empty:
                return None  # someone found work meanwhile: the caller dequeues again at once
            self.dequeue_requests += 1
            rollout = await self.store.dequeue_rollout(worker_id=worker_id)
            if rollout is not None:
                self._queue_empty = False
                return rollout
            await self._sleep(self.poll_interval)
        return None

    async def _shared_dequeue(self, worker_id: str) -> AttemptedRollout | None:
        """Workers that want a rollout at the same time share one dequeue (in the exchange
        request, else one ``dequeue_many_rollouts`` call; ``limit`` = how many wait): a worker
        that asks while a request is in flight waits for the next one, which serves every
        worker queued meanwhile. The store names the calling worker on the attempts it hands
        out; the worker that runs an attempt is named with its final update (no extra call)."""
        exchange = self._exchange
        if exchange is not None and exchange.supported is not False:
            fut: asyncio.Future[AttemptedRollout | None] = (
                asyncio.get_running_loop().create_future()
            )
            exchange.want(worker_id, fut)
            try:
                return await self._claimed_by(fut)
            except ExchangeUnsupported:
                pass  # agl store: the v0.3 calls below
        if self.workers == 1 or not self.share_requests:
            self.dequeue_requests += 1
            return await self.store.dequeue_rollout(worker_id=worker_id)
        fut = asyncio.get_running_loop().create_future()
        self._dq_waiting.append((worker_id, fut))
        if self._dq_task is None or self._dq_task.done():
            self._dq_task = asyncio.create_task(
                self._dequeue_batches(), name="lightspan-runner-dequeue"
            )
        return await self._claimed_by(fut)

    async def _claimed_by(
        self, fut: asyncio.Future[AttemptedRollout | None]
    ) -> AttemptedRollout | None:
        """Wait for a shared dequeue's answer for this worker."""
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            # This worker is gone (hard stop): whatever the shared call claims for it is
            # reported failed, not left claimed.
            if not fut.cancel() and not fut.cancelled() and fut.exception() is None:
                rollout = fut.result()
                if rollout is not None:
                    self._abandon(rollout)
            raise

    async def _dequeue_batches(self) -> None:
        while self._dq_waiting:
            waiting, self._dq_waiting = self._dq_waiting, []
            try:
                self.dequeue_requests += 1
                got = list(
                    await self.store.dequeue_many_rollouts(
                        limit=len(waiting), worker_id=waiting[0][0]
                    )
                )
            except BaseException as e:
                for _, fut in waiting:
                    if not fut.done():
                        fut.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
                if not isinstance(e, Exception):
                    raise
                continue
            for i, (_, fut) in enumerate(waiting):
                rollout = got[i] if i < len(got) else None
                if not fut.done():
                    fut.set_result(rollout)
                elif rollout is not None:
                    # Its worker was cancelled (hard stop) while the call was in flight.
                    self._abandon(rollout)
            for rollout in got[len(waiting) :]:  # a store that returned more than asked
                self._abandon(rollout)

    def _abandon(self, rollout: AttemptedRollout) -> None:
        """A claimed rollout no worker will run: report its attempt failed (the store's retry
        rules decide what happens next) rather than leave it to the unresponsive timeout."""
        error = RuntimeError("runner stopped before the rollout started")
        task = asyncio.create_task(
            self._finish(
                rollout.rollout_id, rollout.attempt.attempt_id, "failed", error, None, hard=True
            )
        )
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # ------------------------------------------------------------------ one attempt

    async def run_attempt(self, rollout: AttemptedRollout, worker_id: str | None = None) -> str:
        """Run one dequeued rollout and report it; returns the attempt status reported."""
        return await self._run_attempt(rollout, worker_id, pipelined=False)

    async def _run_attempt(
        self, rollout: AttemptedRollout, worker_id: str | None, *, pipelined: bool
    ) -> str:
        """``pipelined`` (the serve loop): return once the run ended and report the attempt
        (spans, then status: :meth:`_finish`, unchanged) in a task beside the worker's next
        dequeue and run, so that their store calls share commits. A worker has at most
        ``report_depth`` reports in flight (it waits for its oldest one beyond that), the
        attempt counts as active (heartbeats) until its report is done, and ``serve`` waits
        for every report before it returns."""
        rid, aid = rollout.rollout_id, rollout.attempt.attempt_id
        t0 = time.perf_counter()
        timeout = rollout.config.timeout_seconds
        self._active[(rid, aid)] = (worker_id or "", rollout.config.unresponsive_seconds)
        status, error, result = "failed", None, None
        run_s = 0.0
        reporting = False
        ran_until: float | None = None  # when its report was queued (pipelined)
        try:
            try:
                inp, expected = self.input_mapping(rollout.input)
                resources = await self.resources.for_rollout(rollout.resources_id, rid, aid)
                r0 = time.perf_counter()
                limit = asyncio.timeout(timeout)
                try:
                    async with limit:
                        result = await self.workflow.run(
                            inp,
                            expected=expected,
                            resources=resources,
                            rollout_id=rid,
                            attempt_id=aid,
                            mode=rollout.mode,
                            metadata={"worker_id": worker_id} if worker_id else None,
                            listeners=(self._listener,),
                        )
                except TimeoutError:
                    if not limit.expired():
                        raise
                    status = "timeout"
                    error = TimeoutError(
                        f"rollout timed out after {timeout}s (config.timeout_seconds)"
                    )
                finally:
                    run_s = time.perf_counter() - r0
                if result is not None:
                    status = "succeeded" if result.ok else "failed"
                    error = result.error
            except asyncio.CancelledError:
                status, error = "failed", RuntimeError("runner stopped before the rollout finished")
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._finish(rid, aid, status, error, None, hard=True))
                raise
            except Exception as e:
                status, error = "failed", e
            runner_id = worker_id if worker_id and worker_id != rollout.attempt.worker_id else None
            if pipelined:
                task = asyncio.create_task(
                    self._report(rollout, status, error, result, runner_id),
                    name=f"lightspan-runner-report/{aid}",
                )
                reporting = True
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)
                mine = self._reports.setdefault(worker_id or "", [])
                mine.append(task)
                ran_until = time.perf_counter()
                while len(mine) > self.report_depth:
                    await asyncio.shield(mine.pop(0))
                return status
            await self._finish(rid, aid, status, error, result, worker_id=runner_id)
            self._notify(rollout, status, result)
            return status
        finally:
            if not reporting:
                self._active.pop((rid, aid), None)
            now = time.perf_counter()
            took = now - t0
            # for prefetch, its time until its report was queued, not the wait for an earlier one
            busy = (ran_until if ran_until is not None else now) - t0
            prev = self._rollout_s
            self._rollout_s = busy if prev is None else 0.8 * prev + 0.2 * busy
            self.stats.workflow_s += run_s
            self.stats.overhead_s += took - run_s
            setattr(self.stats, status, getattr(self.stats, status) + 1)
            self.stats.rollouts += 1

    async def _finish(
        self,
        rid: str,
        aid: str,
        status: str,
        error: BaseException | None,
        result: RunResult | None,
        *,
        hard: bool = False,
        worker_id: str | None = None,
    ) -> str | None:
        """Spans first, then the status (the module's guarantee); the status reported, or
        None. ``worker_id``: name the worker that ran the attempt (when another worker's
        dequeue claimed it). Over HTTP both go in one shared exchange request when the server
        has the extension; else (agl store, in-process stores) as two calls, in that order."""
        update = self._final_update(rid, aid, status, error, worker_id)
        if self._exchange is not None and self._exchange.supported is not False:
            reported = await self._finish_exchanged(update, error, hard=hard)
            if reported is not _FALLBACK:
                return reported
        if not await self._deliver_final(rid, aid, status, error, hard=hard):
            return None
        return await self._report_status(update, hard=hard)

    async def _finish_exchanged(
        self, update: AttemptUpdate, error: BaseException | None, *, hard: bool
    ) -> str | object | None:
        """The attempt's last spans and its status in one :class:`Exchange` report (retried as
        a whole: duplicate spans are ignored); ``_FALLBACK`` if the server lacks the extension
        or the spans are too many for one request."""
        exchange = self._exchange
        assert exchange is not None
        rid, aid, status = update.rollout_id, update.attempt_id, update.status
        if error is not None:
            log.info("rollout %s attempt %s %s: %s", rid, aid, status, _describe(error))
        lock = self._delivery_locks.setdefault((rid, aid), asyncio.Lock())
        async with lock:  # a heartbeat's partial delivery in flight goes first
            spans = self._buffer.take(rid, aid)
            if len(spans) > exchange.max_spans:
                self._buffer.put_back(rid, aid, spans)
                return _FALLBACK
            report = Report(spans, update)
            try:
                delivered, _ = await self._retry_store(
                    f"report({rid}, {aid})", lambda: exchange.report(report), hard=hard
                )
            except ExchangeUnsupported:
                self._buffer.put_back(rid, aid, spans)
                return _FALLBACK
            except UpdateRefused as e:
                self._count_delivery(rid, aid, e.delivered)
                self.stats.status_lost += 1
                log.error("rollout %s attempt %s: status %s refused: %s", rid, aid, status, e.error)
                return None
            except (_Stop, NotFoundError, InvalidRequestError) as e:
                self.stats.status_lost += 1
                log.error(
                    "rollout %s attempt %s: spans and status %s not reported: %s",
                    rid,
                    aid,
                    status,
                    e,
                )
                return None
            finally:
                self._delivery_locks.pop((rid, aid), None)
        self._count_delivery(rid, aid, delivered)
        return status

    @staticmethod
    def _final_update(
        rid: str, aid: str, status: str, error: BaseException | None, worker_id: str | None
    ) -> AttemptUpdate:
        extra: dict[str, Any] = {}
        if error is not None:
            extra["metadata"] = {"error": _describe(error), "error_type": type(error).__name__}
        if worker_id is not None:
            extra["worker_id"] = worker_id
        return AttemptUpdate(rid, aid, status=status, **extra)  # type: ignore[arg-type]

    async def _report(
        self,
        rollout: AttemptedRollout,
        status: str,
        error: BaseException | None,
        result: RunResult | None,
        worker_id: str | None,
    ) -> None:
        rid, aid = rollout.rollout_id, rollout.attempt.attempt_id
        try:
            if await self._finish(rid, aid, status, error, result, worker_id=worker_id):
                self._notify(rollout, status, result)
        except Exception:  # a bug of ours must not go unnoticed
            log.exception("runner: report of rollout %s attempt %s failed", rid, aid)
        finally:
            self._active.pop((rid, aid), None)

    def _notify(self, rollout: AttemptedRollout, status: str, result: RunResult | None) -> None:
        if self.on_result is not None:
            try:
                self.on_result(rollout, status, result)
            except Exception:
                log.exception("runner: on_result callback failed; ignored")

    async def _deliver_final(
        self, rid: str, aid: str, status: str, error: BaseException | None, *, hard: bool
    ) -> bool:
        """Deliver the attempt's last spans; False if its status must not be reported."""
        if error is not None:
            log.info("rollout %s attempt %s %s: %s", rid, aid, status, _describe(error))
        try:
            await self._deliver(rid, aid, final=True, hard=hard)
        except (NotFoundError, InvalidRequestError) as e:
            log.error("rollout %s attempt %s: spans refused: %s", rid, aid, e)
        except _Stop:
            self.stats.status_lost += 1
            log.error("rollout %s attempt %s: spans not delivered, status not reported", rid, aid)
            return False
        return True

    async def _report_status(self, update: AttemptUpdate, *, hard: bool) -> str | None:
        """``update_attempt`` with the final status (retried); the status, or None if lost."""
        rid, aid, status = update.rollout_id, update.attempt_id, update.status
        try:
            await self._retry_store(
                f"update_attempt({rid}, {aid})",
                lambda: self.store.update_attempt(rid, aid, **update.changes()),
                hard=hard,
            )
        except (_Stop, NotFoundError, InvalidRequestError) as e:
            self.stats.status_lost += 1
            log.error("rollout %s attempt %s: status %s not reported: %s", rid, aid, status, e)
            return None
        return status

    async def _deliver(self, rid: str, aid: str, *, final: bool, hard: bool = False) -> None:
        # One delivery per attempt at a time: the final one waits for a heartbeat's partial
        # delivery still in flight (or takes its spans back if it failed), so the status can
        # never overtake any span of the attempt.
        lock = self._delivery_locks.setdefault((rid, aid), asyncio.Lock())
        try:
            async with lock:
                await self._deliver_locked(rid, aid, final=final, hard=hard)
        finally:
            if final:
                self._delivery_locks.pop((rid, aid), None)

    async def _deliver_locked(self, rid: str, aid: str, *, final: bool, hard: bool) -> None:
        spans = self._buffer.take(rid, aid)
        if not spans:
            return
        try:
            res = await self._retry_store(
                f"spans({rid}, {aid})",
                lambda: self._sink.send(spans, rid, aid),
                hard=hard,
                forever=final,
            )
        except BaseException:
            self._buffer.put_back(rid, aid, spans)
            raise
        self._count_delivery(rid, aid, res)

    def _count_delivery(self, rid: str, aid: str, res: DeliveryResult) -> None:
        self.stats.spans += res.sent - res.rejected
        if res.rejected:
            self.stats.spans_rejected += res.rejected
            log.warning(
                "rollout %s attempt %s: store rejected %d span(s): %s",
                rid,
                aid,
                res.rejected,
                res.message,
            )

    async def _retry_store(
        self, what: str, call: Callable[[], Any], *, hard: bool = False, forever: bool = True
    ) -> Any:
        """Call the store until it answers; store errors are retried (connection lost,
        5xx) for ``status_retry_seconds`` (or until a hard stop); NotFound is final."""
        deadline = time.monotonic() + (2.0 if hard else self.status_retry_seconds)
        while True:
            try:
                return await call()
            except (NotFoundError, InvalidRequestError, ExchangeUnsupported, UpdateRefused):
                raise
            except Exception as e:
                self.stats.store_errors += 1
                if (
                    (self._hard.is_set() and not hard)
                    or time.monotonic() >= deadline
                    or not forever
                ):
                    raise _Stop(f"{what}: {e}") from e
                log.warning("runner: %s failed (%s); retrying", what, e)
                await asyncio.sleep(self.store_retry_interval)

    # ------------------------------------------------------------------ heartbeats

    def _heartbeat_stats(self, worker_id: str) -> dict[str, Any]:
        busy = [k for k, (w, _) in self._active.items() if w == worker_id]
        return {
            "runner": "lightspan",
            "workflow": self.workflow.name,
            "pid": os.getpid(),
            "busy": bool(busy),
            "rollouts": self.stats.rollouts,
            "succeeded": self.stats.succeeded,
        }

    async def _register_workers(self) -> None:
        """Register or refresh every worker: in one exchange request where the store has the
        extension, else one ``update_worker`` each (agl store)."""
        if self._exchange is not None:  # raises ExchangeUnsupported against agl store
            try:
                stats = {w: self._heartbeat_stats(w) for w in self.worker_ids}
                await self._exchange.heartbeat(stats)
                return
            except ExchangeUnsupported:
                pass
            except Exception as e:
                self.stats.store_errors += 1
                log.warning("runner: heartbeats of %d workers failed: %s", len(self.worker_ids), e)
                return

        async def one(wid: str) -> None:
            try:
                await self.store.update_worker(wid, heartbeat_stats=self._heartbeat_stats(wid))
            except Exception as e:
                self.stats.store_errors += 1
                log.warning("runner: update_worker(%s) failed: %s", wid, e)

        await asyncio.gather(*(one(wid) for wid in self.worker_ids))

    async def _heartbeats(self) -> None:
        last_worker_beat = time.monotonic()
        while True:
            unresponsive = [u for _, u in self._active.values() if u]
            tick = min([self.heartbeat_interval, *(u / 3 for u in unresponsive)])
            await asyncio.sleep(max(0.2, tick))
            now = time.monotonic()
            if now - last_worker_beat >= self.heartbeat_interval:
                last_worker_beat = now
                await self._register_workers()
            for rid, aid in list(self._active):
                try:
                    if self._buffer.pending(rid, aid):
                        await self._deliver(rid, aid, final=False)
                    else:
                        await self.store.update_attempt(rid, aid, last_heartbeat_time=time.time())
                except Exception as e:
                    self.stats.store_errors += 1
                    log.warning("runner: heartbeat of %s/%s failed: %s", rid, aid, e)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
