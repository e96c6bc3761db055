"""The health scan's cost with many idle running rollouts, and what it does to ingestion.

Why: every auto-registered rollout whose root span never arrives stays ``running`` until it
times out, so a production store holds many; the scan used to load and validate every one of
them inside a write transaction every ``scan_interval`` (issue 16: p99 batch latency 61 ms ->
1.5 s with 50,000). Then one query in a read transaction found the due ones, but it still read
every running rollout joined with its latest attempt. Now the query reads a range of the index
of due times (``ls_attempts.due_at``), so only the rollouts due are read.

For each population of idle running rollouts (SQLite, synchronous=NORMAL), side by side:
  * scan ms      : one ``scan_health()`` (indexed due times), the join query of the previous
                   scan (read transaction), and the first scan (every running rollout and its
                   latest attempt read and validated inside a write transaction)
  * ingest p99   : p99 latency of 50-span ``add_many_spans`` batches with no scan running, and
                   with each of the three scans running back to back
Run:  .venv/bin/python benchmarks/health_scan.py [--populations 1000 10000 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lightspan.store.api.models import Span
from lightspan.store.backends.sqlite import SqliteLightningStore
from lightspan.store.core import lifecycle as lc


def _spans(rollout: str, n: int, now: float, prefix: str = "") -> list[Span]:
    return [
        Span.build(
            rollout_id=rollout,
            attempt_id="at-1",
            sequence_id=i + 1,
            name="llm",
            parent_id="f" * 16,
            start_time=now,
            end_time=now + 1,
        )
        for i in range(n)
    ]


async def populate(store: SqliteLightningStore, n: int) -> None:
    now = time.time()
    batch: list[Span] = []
    for i in range(n):
        batch += _spans(f"ro-idle-{i:08d}", 1, now)
        if len(batch) == 2000:
            await store.add_many_spans(batch)
            batch = []
    if batch:
        await store.add_many_spans(batch)


async def join_scan(store: SqliteLightningStore) -> None:
    """The previous candidate query (before due times): every running rollout joined with its
    latest attempt, limits evaluated by SQLite, in a read transaction on the scan connection."""
    timeout = "json_extract(r.doc, '$.config.timeout_seconds')"
    unresponsive = "json_extract(r.doc, '$.config.unresponsive_seconds')"
    now = time.time()
    async with store._scan_tx() as tx:
        await tx.c.fetchall(
            "SELECT r.rollout_id FROM ls_rollouts r JOIN ls_attempts a "
            "ON a.rollout_id = r.rollout_id AND a.sequence_id = "
            "(SELECT MAX(b.sequence_id) FROM ls_attempts b WHERE b.rollout_id = r.rollout_id) "
            f"WHERE r.status IN ('preparing', 'running') AND (({timeout} IS NOT NULL AND "
            f"? - a.start_time > {timeout}) OR ({unresponsive} IS NOT NULL AND "
            f"? - COALESCE(a.last_heartbeat_time, a.start_time) > {unresponsive})) "
            "ORDER BY r.rollout_id",
            [now, now],
        )


async def old_scan(store: SqliteLightningStore) -> None:
    """The previous scan: everything read and validated under the write lock."""
    async with store._tx(write=True) as tx:
        candidates = await tx.rollouts_in_status(["preparing", "running"])
        latest = await tx.latest_attempts([r.rollout_id for r in candidates])
        now = time.time()
        for r in candidates:
            if r.rollout_id in latest:
                lc.health_verdict(r, latest[r.rollout_id], now)


async def ingest_p99(store: SqliteLightningStore, scan, seconds: float) -> str:
    stop = asyncio.Event()

    async def scanner() -> None:
        while not stop.is_set():
            await scan()
            await asyncio.sleep(0)

    task = asyncio.create_task(scanner()) if scan else None
    lat = []
    deadline = time.monotonic() + seconds
    k = 0
    while time.monotonic() < deadline:
        k += 1
        spans = _spans(f"ro-live-{id(lat)}-{k}", 50, time.time())
        t = time.perf_counter()
        await store.add_many_spans(spans)
        lat.append(time.perf_counter() - t)
        await asyncio.sleep(0.005)
    stop.set()
    if task:
        await task
    if len(lat) < 20:  # starved: the batches that got through at all
        return f"{max(lat) * 1000:.0f} ({len(lat)} batches)"
    return f"{statistics.quantiles(lat, n=100)[98] * 1000:.1f} ({len(lat)} batches)"


async def main(populations: list[int], seconds: float) -> None:
    table = Table(title="health scan with idle running rollouts (SQLite)")
    for col in (
        "idle rollouts",
        "scan ms: indexed",
        "join query",
        "first scan",
        "ingest p99 ms: no scan",
        "indexed scan running",
        "join query running",
        "first scan running",
    ):
        table.add_column(col, justify="right")
    for n in populations:
        with tempfile.TemporaryDirectory() as d:
            store = SqliteLightningStore(Path(d) / "s.db", scan_interval=0, synchronous="NORMAL")
            await store.start()
            await populate(store, n)
            t = time.perf_counter()
            await store.scan_health()
            new_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            await join_scan(store)
            join_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            await old_scan(store)
            old_ms = (time.perf_counter() - t) * 1000
            quiet = await ingest_p99(store, None, seconds)
            with_new = await ingest_p99(store, store.scan_health, seconds)
            with_join = await ingest_p99(store, lambda s=store: join_scan(s), seconds)
            with_old = await ingest_p99(store, lambda s=store: old_scan(s), seconds)
            await store.close()
        table.add_row(
            f"{n:,}",
            f"{new_ms:.1f}",
            f"{join_ms:.0f}",
            f"{old_ms:.0f}",
            quiet,
            with_new,
            with_join,
            with_old,
        )
    Console().print(table)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--populations", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    ap.add_argument("--seconds", type=float, default=8.0, help="per ingestion measurement")
    args = ap.parse_args()
    asyncio.run(main(args.populations, args.seconds))
