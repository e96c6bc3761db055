"""SQLite keeps everything across a restart, and an acknowledged span batch survives SIGKILL.

Why a real SIGKILL in a child process: "durable once the call returns" is only proven by killing
the writer mid-ingestion without any chance to flush, then reading the file back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from lightspan.store import EnqueueRolloutRequest, PromptTemplate, Span
from lightspan.store.backends.sqlite import SqliteLightningStore


def _span(rid: str, aid: str, seq: int) -> Span:
    return Span.build(rollout_id=rid, attempt_id=aid, sequence_id=seq, name="s", end_time=1.0)


async def test_everything_is_there_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteLightningStore(path, scan_interval=0)
    await store.start()
    res = await store.add_resources({"p": PromptTemplate(template="x", engine="f-string")})
    queued = await store.enqueue_many_rollouts([EnqueueRolloutRequest(input=i) for i in range(3)])
    ar = await store.dequeue_rollout(worker_id="w1")
    assert ar is not None
    seqs = await store.get_many_span_sequence_ids([(ar.rollout_id, ar.attempt.attempt_id)] * 3)
    await store.add_many_spans([_span(ar.rollout_id, ar.attempt.attempt_id, s) for s in seqs])
    await store.update_worker("w1", heartbeat_stats={"k": 1})
    before = await store.statistics()
    await store.close()

    again = SqliteLightningStore(path, scan_interval=0)
    await again.start()
    try:
        after = await again.statistics()
        assert {k: v for k, v in after.items() if k.startswith("total_")} == {
            k: v for k, v in before.items() if k.startswith("total_")
        }
        latest = await again.get_latest_resources()
        assert latest is not None and latest.resources_id == res.resources_id
        got = await again.get_rollout_by_id(ar.rollout_id)
        assert got is not None and got.status == "running"
        assert [s.sequence_id for s in await again.query_spans(ar.rollout_id)] == [1, 2, 3]
        assert await again.get_next_span_sequence_id(ar.rollout_id, ar.attempt.attempt_id) == 4
        # The queue kept its order.
        nxt = await again.dequeue_rollout()
        assert nxt is not None and nxt.rollout_id == queued[1].rollout_id
        worker = await again.get_worker_by_id("w1")
        assert worker is not None and worker.heartbeat_stats == {"k": 1}
    finally:
        await again.close()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from lightspan.store import Span
    from lightspan.store.backends.sqlite import SqliteLightningStore

    async def main(path):
        store = SqliteLightningStore(path, scan_interval=0)
        await store.start()
        ar = await store.start_rollout(None)
        print("ROLLOUT", ar.rollout_id, flush=True)
        seq = 0
        while True:
            batch = []
            for _ in range(200):
                seq += 1
                batch.append(Span.build(rollout_id=ar.rollout_id,
                    attempt_id=ar.attempt.attempt_id, sequence_id=seq, name="s"))
            await store.add_many_spans(batch)
            print("ACK", seq, flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_acknowledged_spans_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    proc = subprocess.Popen(  # noqa: ASYNC220 - the child is killed, not awaited
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    acked = 0
    rollout_id = None
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ROLLOUT"):
                rollout_id = line.split()[1]
            elif line.startswith("ACK"):
                acked = int(line.split()[1])
                if acked >= 2000:
                    break
            if time.monotonic() > deadline:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert rollout_id is not None and acked >= 2000, proc.stderr.read() if proc.stderr else ""

    store = SqliteLightningStore(path, scan_interval=0)
    await store.start()
    try:
        page = await store.query_spans(rollout_id)
        seqs = [s.sequence_id for s in page]
        assert len(seqs) >= acked  # every acknowledged span, maybe a batch more
        assert seqs[:acked] == list(range(1, acked + 1))
    finally:
        await store.close()
