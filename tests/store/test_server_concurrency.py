"""Many runners dequeue at once through two store servers sharing one PostgreSQL database:
every rollout is handed out exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from lightspan.store import EnqueueRolloutRequest
from lightspan.store.api.client import LightningStoreClient
from tests.store.servers import StoreProcess

ROLLOUTS = 320
DEQUEUERS = 32


@pytest.mark.postgres
async def test_32_dequeuers_over_two_servers_get_each_rollout_once(postgres_db_dsn: str) -> None:
    servers = [StoreProcess("postgres", db=postgres_db_dsn) for _ in range(2)]
    for s in servers:
        s.start()
    clients = [LightningStoreClient(s.address, timeout=30) for s in servers]
    try:
        enqueued = await clients[0].enqueue_many_rollouts(
            [EnqueueRolloutRequest(input={"i": i}) for i in range(ROLLOUTS)]
        )
        expected = {r.rollout_id for r in enqueued}
        got: list[tuple[str, str, str]] = []  # (rollout_id, attempt_id, worker_id)
        start = asyncio.Event()

        async def runner(n: int) -> None:
            client = clients[n % 2]  # half the runners on each server
            worker = f"runner-{n}"
            await start.wait()
            empty = 0
            while empty < 3:
                batch = await client.dequeue_many_rollouts(limit=1 + n % 3, worker_id=worker)
                if not batch:
                    empty += 1
                    await asyncio.sleep(0.02)
                    continue
                empty = 0
                got.extend((r.rollout_id, r.attempt.attempt_id, worker) for r in batch)

        tasks = [asyncio.create_task(runner(n)) for n in range(DEQUEUERS)]
        start.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)

        counts = Counter(rid for rid, _, _ in got)
        duplicated = {rid: c for rid, c in counts.items() if c > 1}
        assert not duplicated, f"rollouts handed out more than once: {duplicated}"
        assert set(counts) == expected
        # both servers did real work, and the database agrees: one attempt per rollout
        assert len({w for _, _, w in got}) > DEQUEUERS // 2
        page = await clients[1].query_rollouts(rollout_id_in=sorted(expected))
        assert page.total == ROLLOUTS
        assert all(r.status == "preparing" for r in page)
        owner = {rid: aid for rid, aid, _ in got}
        assert all(r.attempt.attempt_id == owner[r.rollout_id] for r in page)
    finally:
        for c in clients:
            await c.close()
        for s in servers:
            s.stop()
