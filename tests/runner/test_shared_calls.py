"""Workers of one runner share store requests (dequeue, span export) and keep every guarantee."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lightspan.runner import WorkflowRunner
from lightspan.store.api.client import LightningStoreClient
from lightspan.store.api.models import AttemptedRollout
from lightspan.store.backends.factory import open_store
from lightspan.store.backends.memory import InMemoryLightningStore
from tests.runner.workflows import wide_workflow
from tests.store.servers import StoreProcess


class _CountingClient(LightningStoreClient):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.dequeue_limits: list[int] = []
        self.exports = 0
        self.single_updates = 0
        self.exchanges: list[tuple[int, int]] = []
        """(updates, dequeue limit) of each exchange request."""

    async def update_attempt(self, *a: Any, **kw: Any) -> Any:
        self.single_updates += 1
        return await super().update_attempt(*a, **kw)

    async def runner_exchange(self, **kw: Any) -> Any:
        self.exchanges.append((len(kw.get("updates", ())), kw.get("dequeue", 0)))
        return await super().runner_exchange(**kw)

    async def dequeue_many_rollouts(
        self, *, limit: int = 1, worker_id: str | None = None
    ) -> Sequence[AttemptedRollout]:
        self.dequeue_limits.append(limit)
        return await super().dequeue_many_rollouts(limit=limit, worker_id=worker_id)

    async def export_otlp(self, body: bytes) -> tuple[int, str]:
        self.exports += 1
        return await super().export_otlp(body)


async def test_workers_share_reports_and_dequeues_in_exchange_requests_over_http(
    store_server: StoreProcess, client: LightningStoreClient
) -> None:
    """Against our server, spans, statuses and dequeues of several workers share requests of
    the ``runner/exchange`` extension; no v0.3 call is needed while the queue has work."""
    counting = _CountingClient(store_server.address)
    n, workers = 30, 6
    ids = [(await client.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(n)]
    wf = wide_workflow(width=4)
    runner = WorkflowRunner(wf, counting, workers=workers, worker_id_prefix="share")
    stats = await runner.serve(max_rollouts=n)
    await counting.close()
    assert (stats.succeeded, stats.failed, stats.status_lost) == (n, 0, 0)
    assert counting.exchange_supported is True
    # the six workers start together: one request claims a rollout for each
    assert counting.exchanges[0] == (0, workers)
    # every status went in an exchange, several per request; no single update, no span export
    assert sum(u for u, _ in counting.exchanges) == n
    assert runner._exchange is not None and runner._exchange.requests == len(counting.exchanges)
    # unshared, a rollout would take two requests (its claim, its report): here fewer than one
    assert len(counting.exchanges) < n, counting.exchanges
    assert counting.single_updates == 0 and counting.exports == 0
    assert any(u and d for u, d in counting.exchanges)  # reports beside dequeues
    for rid in ids:
        rollout = await client.get_rollout_by_id(rid)
        assert rollout is not None and rollout.status == "succeeded"
        # every span of every attempt is stored (4 branches + 5 others)
        assert (await client.query_spans(rid)).total == 9
    # the first six rollouts were claimed by one call (naming worker 0), one per worker: each
    # attempt names the worker that ran it
    first = [await client.get_latest_attempt(rid) for rid in ids[:workers]]
    assert {a.worker_id for a in first if a is not None} == set(runner.worker_ids)


async def test_workers_share_v03_calls_without_the_extension(
    store_server: StoreProcess, client: LightningStoreClient
) -> None:
    """Against a server without the extension (as ``agl store``), shared dequeues and span
    exports, one ``update_attempt`` per status after its spans."""
    counting = _CountingClient(store_server.address)
    counting.exchange_supported = False
    n, workers = 30, 6
    ids = [(await client.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(n)]
    runner = WorkflowRunner(wide_workflow(width=4), counting, workers=workers)
    stats = await runner.serve(max_rollouts=n)
    await counting.close()
    assert (stats.succeeded, stats.failed, stats.status_lost) == (n, 0, 0)
    assert counting.exchanges == []
    assert counting.dequeue_limits[0] == workers
    assert runner.dequeue_requests == len(counting.dequeue_limits) < n
    assert counting.exports == runner._sink.requests <= n
    assert counting.single_updates == n
    for rid in ids:
        assert (await client.query_spans(rid)).total == 9


async def test_one_worker_on_sqlite_needs_about_one_commit_per_rollout(tmp_path: Path) -> None:
    """Its report (spans, then status) goes out beside its next dequeue: they share the store's
    commits (fsyncs), and every guarantee of the attempt still holds."""
    store = await open_store("sqlite", path=tmp_path / "one.db")
    try:
        n = 20
        ids = [(await store.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(n)]
        before = store.write_commits  # type: ignore[attr-defined]
        done: list[str] = []
        runner = WorkflowRunner(
            wide_workflow(width=2),
            store,
            workers=1,
            on_result=lambda ro, status, res: done.append(ro.rollout_id),
        )
        stats = await runner.serve(max_rollouts=n)
        commits = store.write_commits - before  # type: ignore[attr-defined]
        assert stats.succeeded == n and sorted(done) == sorted(ids)
        # three write calls per rollout (claim, spans, status): without sharing, 3 * n commits;
        # the next claim always shares the commit of the previous attempt's spans (and, when
        # the run is shorter than a commit, its status too: ~1 per rollout for a no-op)
        assert commits <= 2 * n + 5, commits
        for rid in ids:
            rollout = await store.get_rollout_by_id(rid)
            assert rollout is not None and rollout.status == "succeeded"
            assert (await store.query_spans(rid)).total == 7
    finally:
        await store.close()


class _SlowDequeueStore(InMemoryLightningStore):
    async def dequeue_many_rollouts(
        self, *, limit: int = 1, worker_id: str | None = None
    ) -> Sequence[AttemptedRollout]:
        claimed = await super().dequeue_many_rollouts(limit=limit, worker_id=worker_id)
        await asyncio.sleep(0.3)  # the answer is on its way when the runner is stopped hard
        return claimed


async def test_a_hard_stop_during_a_shared_dequeue_leaves_no_rollout_claimed() -> None:
    store = _SlowDequeueStore()
    await store.start()
    try:
        ids = [(await store.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(3)]
        runner = WorkflowRunner(wide_workflow(width=2), store, workers=3, poll_interval=0.02)
        task = asyncio.create_task(runner.serve())
        await asyncio.sleep(0.1)
        runner.request_stop(hard=True)
        await asyncio.wait_for(task, 10)
        for rid in ids:
            attempt = await store.get_latest_attempt(rid)
            assert attempt is not None and attempt.status == "failed", attempt
            assert "stopped before the rollout started" in (attempt.metadata or {})["error"]
    finally:
        await store.close()


class _MisaddressingClient(LightningStoreClient):
    """Sends the status of one attempt to an attempt id the store does not know."""

    def __init__(self, *a: Any, victim: str, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.victim = victim

    async def runner_exchange(self, **kw: Any) -> Any:
        kw["updates"] = [
            replace(u, attempt_id="at-unknown") if u.rollout_id == self.victim else u
            for u in kw.get("updates", ())
        ]
        return await super().runner_exchange(**kw)


async def test_a_refused_status_in_an_exchange_loses_only_that_status(
    store_server: StoreProcess, client: LightningStoreClient
) -> None:
    """The store refuses one update of a shared request (unknown attempt): its spans are
    stored, its status is counted lost, the other attempts of the request are unaffected."""
    ids = [(await client.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(6)]
    victim = ids[2]
    mis = _MisaddressingClient(store_server.address, victim=victim)
    runner = WorkflowRunner(wide_workflow(width=2), mis, workers=3, status_retry_seconds=5)
    stats = await runner.serve(max_rollouts=6)
    await mis.close()
    assert mis.exchange_supported is True
    assert stats.status_lost == 1 and stats.store_errors == 0
    for rid in ids:
        rollout = await client.get_rollout_by_id(rid)
        assert rollout is not None
        assert rollout.status == ("running" if rid == victim else "succeeded")
        assert (await client.query_spans(rid)).total == 7


class _SlowExchangeClient(LightningStoreClient):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.answered = asyncio.Event()

    async def runner_exchange(self, **kw: Any) -> Any:
        result = await super().runner_exchange(**kw)
        self.answered.set()
        await asyncio.sleep(0.3)  # the answer is on its way when the runner is stopped hard
        return result


async def test_a_hard_stop_during_an_exchange_dequeue_leaves_no_rollout_claimed(
    store_server: StoreProcess, client: LightningStoreClient
) -> None:
    ids = [(await client.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(3)]
    slow = _SlowExchangeClient(store_server.address)
    runner = WorkflowRunner(wide_workflow(width=2), slow, workers=3, poll_interval=0.02)
    task = asyncio.create_task(runner.serve())
    await asyncio.wait_for(slow.answered.wait(), 10)  # the store claimed them for the workers
    runner.request_stop(hard=True)
    await asyncio.wait_for(task, 10)
    await slow.close()
    for rid in ids:
        attempt = await client.get_latest_attempt(rid)
        assert attempt is not None and attempt.status == "failed", attempt
        assert "stopped before the rollout started" in (attempt.metadata or {})["error"]
