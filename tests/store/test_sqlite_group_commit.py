"""SQLite group commit: concurrent write calls share one COMMIT, and each keeps its own outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lightspan.store.api.base import NotFoundError
from lightspan.store.api.models import Worker
from lightspan.store.backends.sqlite import SqliteLightningStore


async def test_concurrent_calls_share_commits_and_a_failing_call_loses_only_its_changes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "group.db"
    store = SqliteLightningStore(db)  # synchronous=FULL, the default
    await store.start()
    try:
        before = store.write_commits

        async def failing_after_a_write() -> None:
            async with store._tx(write=True) as tx:
                await tx.save_worker(Worker(worker_id="doomed"))
                raise RuntimeError("this call fails after writing")

        calls = [store.update_worker(f"w{i}", heartbeat_stats={"i": i}) for i in range(20)]
        results = await asyncio.gather(
            *calls[:10],
            failing_after_a_write(),
            store.update_attempt("no-such-rollout", "latest", status="succeeded"),
            *calls[10:],
            return_exceptions=True,
        )
        assert isinstance(results[10], RuntimeError)
        assert isinstance(results[11], NotFoundError)
        assert not any(isinstance(r, BaseException) for i, r in enumerate(results) if i > 11)
        assert not any(isinstance(r, BaseException) for r in results[:10])
        # 22 write calls, far fewer commits (fsyncs): they arrived together
        commits = store.write_commits - before
        assert 1 <= commits < 10, commits
        # a read right after sees every successful call (and not the rolled-back one)
        ids = {w.worker_id for w in (await store.query_workers()).items}
        assert ids == {f"w{i}" for i in range(20)}
    finally:
        await store.close()
    # and it is all on disk
    reopened = SqliteLightningStore(db)
    await reopened.start()
    try:
        ids = {w.worker_id for w in (await reopened.query_workers()).items}
        assert ids == {f"w{i}" for i in range(20)}
    finally:
        await reopened.close()


async def test_a_failed_commit_fails_every_call_of_its_group(tmp_path: Path) -> None:
    store = SqliteLightningStore(tmp_path / "fail.db")
    await store.start()
    try:
        raw = store._raw
        assert raw is not None

        async def breaks_the_transaction() -> None:
            async with store._tx(write=True):
                # Leave the transaction from inside (as an I/O error would): nothing of the
                # group may then claim to be stored.
                raw.execute("ROLLBACK")

        results = await asyncio.gather(
            store.update_worker("a"),
            breaks_the_transaction(),
            store.update_worker("b"),
            return_exceptions=True,
        )
        # "a" shared the broken transaction: it fails too; "b" came after and starts afresh
        assert isinstance(results[0], Exception) and isinstance(results[1], Exception), results
        assert isinstance(results[2], Worker), results
        ids = {w.worker_id for w in (await store.query_workers()).items}
        assert ids == {"b"}
        # the store keeps working afterwards
        await store.update_worker("c")
        assert {w.worker_id for w in (await store.query_workers()).items} == {"b", "c"}
    finally:
        await store.close()


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_a_lone_call_commits_at_once(tmp_path: Path, synchronous: str) -> None:
    store = SqliteLightningStore(tmp_path / "lone.db", synchronous=synchronous)
    await store.start()
    try:
        before = store.write_commits
        for i in range(3):
            await store.update_worker(f"w{i}")
        assert store.write_commits - before == 3
    finally:
        await store.close()
