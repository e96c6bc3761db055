"""``LightningStore.update_many_attempts`` (lightspan extension) in process and through the client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lightspan.store import AttemptUpdate, NotFoundError
from lightspan.store.api.client import LightningStoreClient
from lightspan.store.backends.factory import open_store
from tests.store.servers import StoreProcess


async def _two_claimed(store: Any) -> list[Any]:
    a = await store.enqueue_rollout({"n": 1})
    b = await store.enqueue_rollout({"n": 2})
    got = await store.dequeue_many_rollouts(limit=2, worker_id="w")
    assert {r.rollout_id for r in got} == {a.rollout_id, b.rollout_id}
    return sorted(got, key=lambda r: r.rollout_id)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_results_in_order_and_errors_per_item(backend: str, tmp_path: Path) -> None:
    kw: dict[str, Any] = {"path": str(tmp_path / "s.db")} if backend == "sqlite" else {}
    store = await open_store(backend, **kw)
    try:
        a, b = await _two_claimed(store)
        res = await store.update_many_attempts(
            [
                AttemptUpdate(a.rollout_id, a.attempt.attempt_id, status="succeeded"),
                AttemptUpdate("ro-missing", "at-x", status="failed"),
                AttemptUpdate(b.rollout_id, "latest", worker_id="w2"),
                # same rollout twice: applied in the order given
                AttemptUpdate(b.rollout_id, "latest", status="succeeded"),
            ]
        )
        assert [type(r).__name__ for r in res] == ["Attempt", "NotFoundError", "Attempt", "Attempt"]
        assert isinstance(res[1], NotFoundError) and "ro-missing" in str(res[1])
        assert res[0].status == "succeeded"
        assert res[3].status == "succeeded" and res[3].worker_id == "w2"
        assert (await store.get_rollout_by_id(b.rollout_id)).status == "succeeded"
        assert await store.update_many_attempts([]) == []
    finally:
        await store.close()


async def test_client_uses_the_servers_extension() -> None:
    proc = StoreProcess("memory").start()
    try:
        async with LightningStoreClient(proc.address) as client:
            a, b = await _two_claimed(client)
            res = await client.update_many_attempts(
                [
                    AttemptUpdate(
                        a.rollout_id,
                        a.attempt.attempt_id,
                        status="failed",
                        metadata={"error": "E: x"},
                    ),
                    AttemptUpdate(b.rollout_id, "at-nope", status="failed"),
                ]
            )
            assert client.exchange_supported is True
            assert res[0].status == "failed" and res[0].metadata == {"error": "E: x"}
            assert isinstance(res[1], NotFoundError) and "at-nope" in str(res[1])
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_then_writes_commit_with_the_spans_or_not_at_all(
    backend: str, tmp_path: Path
) -> None:
    """``add_many_spans(then=...)`` (the runner exchange's transaction): the statuses commit
    with their spans; when the writes fail, that call's spans are not stored either, and a
    concurrent call sharing the group commit is unaffected."""
    import asyncio

    from tests.store.test_conformance import span

    kw: dict[str, Any] = {"path": str(tmp_path / "s.db")} if backend == "sqlite" else {}
    store = await open_store(backend, **kw)
    try:
        a, b = await _two_claimed(store)
        c = (await store.dequeue_many_rollouts(limit=1)) or None
        assert c == [] or c is None
        writes = store.exchange_writes(
            [
                AttemptUpdate(a.rollout_id, a.attempt.attempt_id, status="succeeded"),
                AttemptUpdate("ro-missing", "at-x", status="failed"),
            ],
            0,
            None,
        )
        res = await store.add_many_spans(
            [span(a.rollout_id, a.attempt.attempt_id, i) for i in range(1, 4)], then=writes
        )
        done, claimed = res.then_result
        assert len(res) == 3 and claimed == []
        assert done[0].status == "succeeded" and isinstance(done[1], NotFoundError)
        assert (await store.get_rollout_by_id(a.rollout_id)).status == "succeeded"
        assert (await store.query_spans(a.rollout_id)).total == 3

        if backend == "sqlite":  # the memory store has no rollback (nothing in it fails)

            async def failing(tx: Any) -> None:
                await store.exchange_writes(
                    [AttemptUpdate(b.rollout_id, "latest", status="succeeded")], 0, None
                )(tx)
                raise RuntimeError("the writes failed")

            other = await store.enqueue_rollout({"n": 3})
            (o,) = await store.dequeue_many_rollouts(limit=1)
            assert o.rollout_id == other.rollout_id
            results = await asyncio.gather(
                store.add_many_spans([span(b.rollout_id, "latest", 1)], then=failing),
                store.add_many_spans([span(o.rollout_id, o.attempt.attempt_id, 1)]),
                return_exceptions=True,
            )
            assert isinstance(results[0], RuntimeError)
            assert (await store.query_spans(b.rollout_id)).total == 0
            assert (await store.get_rollout_by_id(b.rollout_id)).status == "preparing"
            assert (await store.query_spans(o.rollout_id)).total == 1
        # no span left to store: the writes still run (their own transaction)
        more = await store.enqueue_rollout({"n": 4})
        res = await store.add_many_spans([], then=store.exchange_writes([], 5, "w-empty"))
        assert [r.rollout_id for r in res.then_result[1]] == [more.rollout_id]
    finally:
        await store.close()
