"""Ingestion speed as the attempts receiving spans outgrow the span-id cache (SQLite, in-process).

    .venv/bin/python benchmarks/span_id_cache.py [--attempts 40] [--batches 800] \
        [--bounds 250000,2000000]

Why: the SQL backends find duplicate spans through an in-memory cache of span ids per attempt
(``SpanKeyCache``, bounded, LRU by attempt). While the ids of every attempt receiving spans fit
in it, a batch costs a few set lookups; once they do not, the attempts evict each other and
every batch reads its attempts' stored ids back from disk, which grows with the attempts. This
measures where that happens and what ``lightspan store serve --span-id-cache N`` buys.

Workload: ``--attempts`` attempts, each request 512 realistic spans over 8 of them
(``bench_common.workload``), consecutive requests moving through all attempts, so every attempt
keeps receiving spans as it grows. One store per bound, fed the same requests; the stores take
turns every 100 requests, so each row of the table compares the bounds in the same minutes.
Spans/s counts the store's work only (conversion done beforehand).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench_common import Attempt, workload
from lightspan.store.backends.sqlite import SqliteLightningStore
from lightspan.store.intake.convert import convert
from lightspan.store.intake.ingest import ingest

BATCH = 512
STEP = 100  # requests per measurement


async def _attempts(store: SqliteLightningStore, n: int) -> list[Attempt]:
    out = []
    for i in range(n):
        ar = await store.start_rollout({"task": i})
        out.append(Attempt(ar.rollout_id, ar.attempt.attempt_id))
    return out


async def run(args: argparse.Namespace) -> list[tuple[int, list[float]]]:
    bounds = [int(b) for b in args.bounds.split(",")]
    rows: list[tuple[int, list[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = [
            SqliteLightningStore(Path(tmp) / f"b{b}.db", scan_interval=0, span_id_cache=b)
            for b in bounds
        ]
        for store in stores:
            await store.start()
        attempts = [await _attempts(store, args.attempts) for store in stores]
        try:
            with Progress(transient=True) as progress:
                task = progress.add_task("requests stored", total=args.batches * len(stores))
                for start in range(0, args.batches, STEP):
                    speeds = []
                    for store, atts in zip(stores, attempts, strict=True):
                        bodies = workload("realistic", atts, STEP, BATCH, seed=start + 7)
                        converted = [convert(b) for b in bodies]
                        t0 = time.perf_counter()
                        for c in converted:
                            result = await ingest(store, c)
                            if result.stored != BATCH:
                                raise RuntimeError(f"stored {result.stored} of {BATCH} spans")
                            progress.advance(task)
                        speeds.append(STEP * BATCH / (time.perf_counter() - t0))
                    rows.append(((start + STEP) * BATCH, speeds))
        finally:
            for store in stores:
                await store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=40, help="attempts receiving spans (40)")
    parser.add_argument("--batches", type=int, default=800, help="requests of 512 spans (800)")
    parser.add_argument(
        "--bounds", default="250000,2000000", help="span-id cache bounds to compare (ids)"
    )
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    bounds = [int(b) for b in args.bounds.split(",")]
    table = Table(title=f"SQLite ingestion, {args.attempts} attempts receiving spans")
    table.add_column("spans stored", justify="right")
    table.add_column("per attempt", justify="right")
    for b in bounds:
        table.add_column(f"spans/s, cache {b:,} ids", justify="right")
    if len(bounds) > 1:
        table.add_column(f"{bounds[-1]:,} / {bounds[0]:,}", justify="right")
    for stored, speeds in rows:
        cells = [f"{stored:,}", f"{stored // args.attempts:,}", *(f"{s:,.0f}" for s in speeds)]
        if len(bounds) > 1:
            cells.append(f"{speeds[-1] / speeds[0]:.1f}x")
        table.add_row(*cells)
    Console().print(table)


if __name__ == "__main__":
    main()
