"""The SQL backends' write-behind (``backends/sql.py``, "one write per record"): a record saved
several times in one transaction is written once, in its last state; what the transaction
saved is what its own reads and queries see; a transaction that fails writes nothing."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lightspan.store import AttemptUpdate
from lightspan.store.api.query import Cond, Query
from lightspan.store.backends.factory import create_store
from tests.store.test_conformance import span


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        store = create_store("sqlite", path=str(tmp_path / "s.db"), scan_interval=0)
    else:
        dsn = request.getfixturevalue("postgres_db_dsn")
        store = create_store("postgres", dsn=dsn, scan_interval=0)
    await store.start()
    yield store
    await store.close()


def _statements(store: Any) -> Counter[str]:
    """Every statement the SQLite store's writer connection runs from now on, by kind."""
    seen: Counter[str] = Counter()
    raw: sqlite3.Connection = store._raw
    raw.set_trace_callback(lambda sql: seen.update([" ".join(sql.split()[:3])]))
    return seen


async def test_an_exchange_writes_its_attempt_and_rollout_once(tmp_path: Path) -> None:
    """The runner's exchange: spans (attempt -> running, rollout -> running), then the status
    (-> succeeded), in one transaction: one write of each, and the stored rows are final."""
    store = create_store("sqlite", path=str(tmp_path / "s.db"), scan_interval=0)
    await store.start()
    try:
        await store.enqueue_rollout({"n": 1})
        (got,) = await store.dequeue_many_rollouts(limit=1, worker_id="w")
        seen = _statements(store)
        writes = store.exchange_writes(
            [AttemptUpdate(got.rollout_id, got.attempt.attempt_id, status="succeeded")], 0, "w"
        )
        res = await store.add_many_spans(
            [span(got.rollout_id, got.attempt.attempt_id, i) for i in (1, 2)], then=writes
        )
        assert res.then_result[0][0].status == "succeeded"
        assert seen["INSERT INTO ls_attempts"] == 1, seen
        assert seen["INSERT INTO ls_rollouts"] == 1, seen
        assert seen["INSERT INTO ls_workers"] == 1, seen
        rollout = await store.get_rollout_by_id(got.rollout_id)
        assert rollout is not None and rollout.status == "succeeded"
        assert rollout.end_time is not None
        attempt = rollout.attempt
        assert attempt is not None and attempt.status == "succeeded"
        assert attempt.last_heartbeat_time is not None  # the spans' heartbeat, kept
        worker = await store.get_worker_by_id("w")
        assert worker is not None and worker.status == "idle"
        conn = sqlite3.connect(tmp_path / "s.db")
        (due,) = conn.execute("SELECT due_at FROM ls_attempts").fetchone()
        assert due is None  # a finished rollout's attempt is not due for the health scan
    finally:
        await store.close()


async def test_a_transaction_sees_its_own_writes(sql_store: Any) -> None:
    """Reads by key answer from the saved records; queries by condition (the queue, the
    health scan, paging) run after the saved records are written."""
    a = await sql_store.enqueue_rollout({"n": 1})
    (claimed,) = await sql_store.dequeue_many_rollouts(limit=1)
    async with sql_store._tx(write=True) as tx:
        (rollout,) = (await tx.get_rollouts([a.rollout_id], for_update=True)).values()
        assert rollout.status == "preparing"
        await tx.save_rollout(rollout.model_copy(update={"status": "requeuing"}))
        again = await tx.get_rollouts([a.rollout_id])
        assert again[a.rollout_id].status == "requeuing"
        latest = (await tx.latest_attempts([a.rollout_id]))[a.rollout_id]
        await tx.save_attempt(latest.model_copy(update={"status": "failed"}))
        assert (await tx.latest_attempts([a.rollout_id]))[a.rollout_id].status == "failed"
        key = (a.rollout_id, claimed.attempt.attempt_id)
        assert (await tx.get_attempts([key]))[key].status == "failed"
        # the queue is a query: it finds the rollout that re-entered it in this transaction
        queued = await tx.claim_queued(5)
        assert [r.rollout_id for r in queued] == [a.rollout_id]
        page, total = await tx.query_attempts(_attempts_of(a.rollout_id))
        assert total == 1 and page[0].status == "failed"
    rollout = await sql_store.get_rollout_by_id(a.rollout_id)
    assert rollout.status == "requeuing" and rollout.attempt.status == "failed"


async def test_a_failed_transaction_writes_nothing(sql_store: Any) -> None:
    a = await sql_store.enqueue_rollout({"n": 1})
    with pytest.raises(RuntimeError, match="stop"):
        async with sql_store._tx(write=True) as tx:
            (rollout,) = (await tx.get_rollouts([a.rollout_id], for_update=True)).values()
            await tx.save_rollout(rollout.model_copy(update={"status": "running"}))
            raise RuntimeError("stop")
    assert (await sql_store.get_rollout_by_id(a.rollout_id)).status == "queuing"
    # and the next transaction does not inherit the failed one's saved records
    (got,) = await sql_store.dequeue_many_rollouts(limit=1)
    assert got.rollout_id == a.rollout_id and got.status == "preparing"


def _attempts_of(rollout_id: str) -> Query:
    return Query(must=[Cond("rollout_id", "exact", rollout_id)])
