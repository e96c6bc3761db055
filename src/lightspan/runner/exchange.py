"""The runner's store requests over HTTP, shared: reports of finished attempts and dequeues.

Why: over HTTP every request costs both processes CPU (client, server framework, validation,
a commit), far more than the work of a no-op rollout. Agent Lightning's v0.3 API needs three
requests per rollout (dequeue, spans, status), which workers can share only call by call. Our
store server has an extension, ``POST /v1/agl/runner/exchange``, that takes all three at once:
spans, then the statuses they precede, and a dequeue. :class:`Exchange` sends everything the
runner's workers want while a request is in flight in the next one: finished attempts' reports
(their spans and final status: the server stores them in one transaction, spans first, so a
status is never readable without its spans) and the dequeues of idle workers. Each caller gets
its own answer or error.

**Prefetch.** One request is in flight at a time, so without more the two processes take
turns: the server works while every worker waits for its next rollout, then the workers run
while the server idles. A request may therefore claim a few rollouts beyond the idle workers'
(``prefetch()``, decided by the runner): they wait in :attr:`Exchange.ready` and the next
workers to ask start them at once, while the next request is in flight. Celery's
``worker_prefetch_multiplier`` does the same for the same reason; the runner keeps the number
to what one round trip needs, so long rollouts are not hoarded away from other runners.

Against a server without the extension (``agl store``) the first request finds out (404/405,
remembered by the client) and every caller gets :class:`ExchangeUnsupported`: the runner then
uses the v0.3 calls (span export, ``update_attempt``, shared ``dequeue_many_rollouts``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from lightspan.exporter.encode import SpanEncoder
from lightspan.runner.spans import DeliveryResult
from lightspan.store.api.base import AttemptUpdate, InvalidRequestError, NotFoundError, StoreError
from lightspan.store.api.client import LightningStoreClient
from lightspan.store.api.models import Attempt, AttemptedRollout

__all__ = ["Exchange", "ExchangeUnsupported", "Report", "UpdateRefused"]


class ExchangeUnsupported(Exception):
    """The store server lacks the exchange extension: use the v0.3 calls."""


@dataclass(slots=True)
class Report:
    """A finished attempt's report: its last spans and its final status update."""

    spans: Sequence[ReadableSpan]
    update: AttemptUpdate


_Want = tuple[str, "asyncio.Future[AttemptedRollout | None]"]
_Pending = tuple[Report, "asyncio.Future[tuple[DeliveryResult, Attempt]]"]


class Exchange:
    """Reports and dequeues of a runner's workers, in shared ``runner_exchange`` requests.

    ``max_spans``/``max_updates`` bound one request (callers send a report of more than
    ``max_spans`` spans the v0.3 way, where span exports are split). ``on_orphan``
    gets a rollout claimed for a worker that stopped waiting (hard stop), to report it.
    ``prefetch()``: how many rollouts a request may claim beyond the waiting workers' (kept
    in :attr:`ready`), asked before each request; ``worker_id`` names the claimer of those
    when no worker waits."""

    def __init__(
        self,
        store: LightningStoreClient,
        *,
        on_orphan: Callable[[AttemptedRollout], None],
        max_spans: int = 1000,
        max_updates: int = 100,
        prefetch: Callable[[], int] = lambda: 0,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.on_orphan = on_orphan
        self.max_spans = max_spans
        self.max_updates = max_updates
        self.prefetch = prefetch
        self.worker_id = worker_id
        self._reports: list[_Pending] = []
        self._wants: list[_Want] = []
        self._beats: dict[str, dict[str, Any]] = {}
        self._beat_waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._encoder = SpanEncoder()  # OTLP bytes, as the SDK's encoder writes them, faster
        self.ready: list[AttemptedRollout] = []
        """Rollouts claimed ahead (prefetched) that no worker has started yet, oldest first."""
        self.round_trip_s: float | None = None
        """Moving average of a request's round trip (seconds; None before the first)."""
        self.requests = 0
        """Exchange requests sent (for benchmarks and tests)."""
        self.prefetched = 0
        """Rollouts claimed ahead of a waiting worker (for benchmarks and tests)."""

    @property
    def supported(self) -> bool | None:
        """Whether the server has the extension (None: not tried yet)."""
        return self.store.exchange_supported

    async def report(self, report: Report) -> tuple[DeliveryResult, Attempt]:
        """Deliver the spans, then the status. Returns the spans' outcome (rejections of a
        request are counted on its first report) and the updated attempt; raises the request's
        error, the update's own error, or :class:`ExchangeUnsupported`."""
        if self.supported is False:
            raise ExchangeUnsupported
        fut: asyncio.Future[tuple[DeliveryResult, Attempt]] = (
            asyncio.get_running_loop().create_future()
        )
        self._reports.append((report, fut))
        self._kick()
        return await asyncio.shield(fut)

    async def heartbeat(self, stats: dict[str, dict[str, Any]]) -> None:
        """Record these workers' heartbeats (worker id -> stats, as ``update_worker``) with the
        next request: a runner registers and refreshes all its workers in one request, not
        one ``update_worker`` each (at 32 workers those were 0.16 of the 0.40 requests per
        rollout of a 200-rollout run).
        Raises the request's error, or :class:`ExchangeUnsupported`."""
        if self.supported is False:
            raise ExchangeUnsupported
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._beats.update(stats)
        self._beat_waiters.append(fut)
        self._kick()
        await asyncio.shield(fut)

    def want(self, worker_id: str, fut: asyncio.Future[AttemptedRollout | None]) -> None:
        """Queue a dequeue for ``worker_id``: ``fut`` gets a prefetched rollout at once, else
        the next request's rollout, None (queue empty), its error, or
        :class:`ExchangeUnsupported`."""
        if self.ready:
            fut.set_result(self.ready.pop(0))
            return
        if self.supported is False:
            fut.set_exception(ExchangeUnsupported())
            return
        self._wants.append((worker_id, fut))
        self._kick()

    def take_ready(self) -> list[AttemptedRollout]:
        """Every prefetched rollout not started yet (the buffer is left empty)."""
        ready, self.ready = self.ready, []
        return ready

    async def drain(self) -> None:
        """Wait until no request is in flight (its answers, orphans included, are handled)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher])

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="lightspan-runner-exchange")

    def _take_reports(self) -> list[_Pending]:
        batch: list[_Pending] = []
        spans = 0
        while self._reports and len(batch) < self.max_updates:
            n = len(self._reports[0][0].spans)
            if batch and spans + n > self.max_spans:
                break
            batch.append(self._reports.pop(0))
            spans += n
        return batch

    async def _flush(self) -> None:
        while self._reports or self._wants or self._beats:
            beats, self._beats = self._beats, {}
            beaten, self._beat_waiters = self._beat_waiters, []
            reports = self._take_reports()
            wants, self._wants = self._wants[: self.max_updates], self._wants[self.max_updates :]
            spans = [s for r, _ in reports for s in r.spans]
            ahead = max(0, self.prefetch() - len(self.ready)) if reports or wants else 0
            claimer = wants[0][0] if wants else self.worker_id
            if claimer is None:
                ahead = 0
            try:
                self.requests += 1
                t0 = time.perf_counter()
                result = await self.store.runner_exchange(
                    otlp=self._encoder.encode_request(spans) if spans else None,
                    updates=[r.update for r, _ in reports],
                    dequeue=len(wants) + ahead,
                    worker_id=claimer if wants or ahead else None,
                    workers=beats,
                )
                if result is None:
                    raise ExchangeUnsupported
                rtt = time.perf_counter() - t0
                prev = self.round_trip_s
                self.round_trip_s = rtt if prev is None else 0.8 * prev + 0.2 * rtt
            except BaseException as e:
                error = e if isinstance(e, Exception) else RuntimeError(repr(e))
                failed = [f for _, f in reports] + [f for _, f in wants] + beaten
                if isinstance(e, ExchangeUnsupported) or not isinstance(e, Exception):
                    failed += [f for _, f in self._reports] + [f for _, f in self._wants]
                    failed += self._beat_waiters
                    self._reports, self._wants = [], []
                    self._beats, self._beat_waiters = {}, []
                for fut in failed:
                    if not fut.done():
                        fut.set_exception(error)
                if not isinstance(e, Exception):
                    raise
                continue
            for fut in beaten:
                if not fut.done():
                    fut.set_result(None)
            for i, ((report, fut), outcome) in enumerate(zip(reports, result.results, strict=True)):
                if fut.done():
                    continue
                if isinstance(outcome, StoreError) and not isinstance(
                    outcome, NotFoundError | InvalidRequestError
                ):
                    fut.set_exception(outcome)  # a store failure: the caller retries
                    continue
                delivered = DeliveryResult(
                    len(report.spans), result.rejected if i == 0 else 0, result.message
                )
                if isinstance(outcome, StoreError):
                    fut.set_exception(UpdateRefused(delivered, outcome))
                else:
                    fut.set_result((delivered, outcome))
            got = result.rollouts
            for i, (_, fut) in enumerate(wants):
                rollout = got[i] if i < len(got) else None
                if fut.done():
                    if rollout is not None:  # its worker stopped waiting (hard stop)
                        self.on_orphan(rollout)
                else:
                    fut.set_result(rollout)
            ahead_got = got[len(wants) : len(wants) + ahead]
            self.prefetched += len(ahead_got)
            self.ready.extend(ahead_got)
            for rollout in got[len(wants) + ahead :]:  # a store that returned more than asked
                self.on_orphan(rollout)
            # Workers that asked while this request was in flight, when the buffer was empty:
            # they start the rollouts just claimed ahead rather than claim more (each of them
            # already counts against ``max_rollouts``, and so does the buffer).
            while self._wants and self.ready:
                _, fut = self._wants.pop(0)
                if not fut.done():
                    fut.set_result(self.ready.pop(0))


class UpdateRefused(Exception):
    """The spans were delivered but the store refused the status update (unknown attempt,
    invalid update): ``delivered`` and the store's ``error``."""

    def __init__(self, delivered: DeliveryResult, error: StoreError) -> None:
        super().__init__(str(error))
        self.delivered = delivered
        self.error = error
