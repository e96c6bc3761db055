"""Exchange requests claim rollouts ahead of idle workers (prefetch) and lose none of them."""

from __future__ import annotations

import asyncio
from typing import Any

from lightspan.runner import RunnerStats, WorkflowRunner
from lightspan.store.api.client import LightningStoreClient
from tests.runner.test_shared_calls import _CountingClient
from tests.runner.workflows import wide_workflow
from tests.store.servers import StoreProcess


async def _statuses(client: LightningStoreClient, ids: list[str]) -> dict[str, int]:
    """How many of ``ids`` are in each rollout status, and how many attempts they had."""
    out: dict[str, int] = {}
    for rid in ids:
        rollout = await client.get_rollout_by_id(rid)
        assert rollout is not None
        out[rollout.status] = out.get(rollout.status, 0) + 1
        attempts = await client.query_attempts(rid)
        out["attempts"] = out.get("attempts", 0) + len(attempts)
    return out


async def test_requests_claim_ahead_and_max_rollouts_still_bounds_what_is_claimed(
    store_server: StoreProcess, client: LightningStoreClient
) -> None:
    """Short rollouts: requests ask for more rollouts than workers wait for (the rest wait in
    the runner's buffer), yet exactly ``max_rollouts`` are claimed and each is run once."""
    n, extra, workers = 60, 10, 4
    ids = [(await client.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(n + extra)]
    counting = _CountingClient(store_server.address)
    runner = WorkflowRunner(wide_workflow(width=2), counting, workers=workers)
    stats = await runner.serve(max_rollouts=n)
    await counting.close()
    assert (stats.succeeded, stats.failed, stats.status_lost) == (n, 0, 0)
    assert runner._exchange is not None and runner._exchange.prefetched > 0
    assert sum(d for _, d in counting.exchanges) >= n
    assert runner._exchange is not None and runner._exchange.ready == []
    # n claimed and run once each; the rest never claimed
    assert await _statuses(client, ids) == {"succeeded": n, "queuing": extra, "attempts": n}


async def test_prefetch_zero_claims_only_for_waiting_workers(
    store_server: StoreProcess, client: LightningStoreClient
) -> None:
    n, workers = 30, 4
    for i in range(n):
        await client.enqueue_rollout({"input": {"i": i}})
    counting = _CountingClient(store_server.address)
    runner = WorkflowRunner(wide_workflow(width=2), counting, workers=workers, prefetch=0)
    stats = await runner.serve(max_rollouts=n)
    await counting.close()
    assert stats.succeeded == n
    assert max(d for _, d in counting.exchanges) <= workers, counting.exchanges
    assert runner._exchange is not None and runner._exchange.prefetched == 0


class _StoppingClient(_CountingClient):
    """Stops its runner right after a request filled the prefetch buffer, before any worker
    took from it."""

    def __init__(self, *a: Any, hard: bool, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.hard = hard
        self.runner: WorkflowRunner | None = None
        self.stopped_with = 0
        """Rollouts in the buffer when it stopped the runner."""

    async def runner_exchange(self, **kw: Any) -> Any:
        result = await super().runner_exchange(**kw)
        # runs once the exchange's flush has handled this answer (buffer filled)
        asyncio.get_running_loop().call_soon(self._stop_if_buffered)
        return result

    def _stop_if_buffered(self) -> None:
        runner = self.runner
        assert runner is not None and runner._exchange is not None
        if not runner.stopping and runner._exchange.ready:
            self.stopped_with = len(runner._exchange.ready)
            runner.request_stop(hard=self.hard)


async def _stop_while_rollouts_wait_in_the_buffer(
    store_server: StoreProcess, client: LightningStoreClient, *, hard: bool
) -> tuple[list[str], RunnerStats]:
    ids = [(await client.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(400)]
    stopping = _StoppingClient(store_server.address, hard=hard)
    runner = WorkflowRunner(wide_workflow(width=2), stopping, workers=4)
    stopping.runner = runner
    stats = await asyncio.wait_for(runner.serve(), 30)
    await stopping.close()
    assert stopping.stopped_with > 0  # the stop came while rollouts waited in the buffer
    return ids, stats


async def test_a_graceful_stop_runs_what_was_claimed_ahead(
    store_server: StoreProcess, client: LightningStoreClient
) -> None:
    """Stopped while rollouts wait in the buffer: the workers still run them (they were
    claimed for this runner), so every rollout ends succeeded or still queued, none failed or
    left claimed."""
    ids, stats = await _stop_while_rollouts_wait_in_the_buffer(store_server, client, hard=False)
    got = await _statuses(client, ids)
    assert got.get("failed", 0) == 0 and got.get("running", 0) == 0, got
    assert got["succeeded"] == stats.succeeded and got["succeeded"] + got["queuing"] == 400, got
    assert got["attempts"] == got["succeeded"]


async def test_a_hard_stop_reports_what_was_claimed_ahead_as_failed(
    store_server: StoreProcess, client: LightningStoreClient
) -> None:
    ids, _ = await _stop_while_rollouts_wait_in_the_buffer(store_server, client, hard=True)
    got = await _statuses(client, ids)
    # nothing is left claimed: each rollout ran, was reported failed, or is still queued
    assert got.get("running", 0) == 0 and got.get("preparing", 0) == 0, got
    assert got.get("succeeded", 0) + got.get("failed", 0) + got.get("queuing", 0) == 400, got


def test_long_rollouts_are_not_claimed_ahead() -> None:
    """What one round trip needs: for rollouts of seconds that is none (they are left to idle
    runners elsewhere); for rollouts shorter than the round trip, up to ``prefetch``."""
    client = LightningStoreClient("http://127.0.0.1:9")
    runner = WorkflowRunner(wide_workflow(width=2), client, workers=8)
    ex = runner._exchange
    assert ex is not None
    assert runner._prefetch_allowance() == 0  # nothing measured yet
    ex.round_trip_s = 0.005
    runner._rollout_s = 2.0
    assert runner._prefetch_allowance() == 0
    runner._rollout_s = 0.010
    assert runner._prefetch_allowance() == 4  # 8 workers x 5 ms / 10 ms
    runner._rollout_s = 0.001
    assert runner._prefetch_allowance() == 8  # capped at prefetch (default: workers)
    runner._max, runner._claimed = 10, 7
    assert runner._prefetch_allowance() == 3  # within max_rollouts
