"""The store backends alone (no server, no OTLP): span ingestion and read-back per backend.

Why separately from store_ingest.py (which measures the server over OTLP against the reference
``agl store``): it shows what each backend itself can take, and so which part of the end-to-end
cost is storage.

  * ingest : ``add_many_spans`` of batches of 512 spans (10 attributes each) from 1 and from 8
             concurrent producers; spans/s of wall time, and CPU microseconds per span (on
             these shared 2-core machines the CPU figure is the steadier one)
  * query  : reading back one rollout of 1,000 and 10,000 spans, as models (``query_spans``)
             and as stored JSON (``query_spans_json``, what the server sends); best of 5

PostgreSQL is measured when ``--postgres DSN`` is given (a scratch database: tables are created).
Run:  .venv/bin/python benchmarks/store_backends.py [--postgres postgresql://...] [--batches 32]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Any

from lightspan.store import LightningStore, Span
from lightspan.store.backends.factory import create_store

ATTRS = {f"gen_ai.attr.{i}": f"value-{i}-" + "x" * 20 for i in range(10)}


def _batch(rollout_id: str, attempt_id: str, first_seq: int, n: int) -> list[Span]:
    return [
        Span.build(
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            sequence_id=first_seq + i,
            name="openai.chat.completion",
            attributes=ATTRS,
            start_time=1.0,
            end_time=2.0,
            parent_id="a" * 16,
        )
        for i in range(n)
    ]


async def _ingest(store: LightningStore, producers: int, batches: int) -> tuple[float, float]:
    jobs = []
    for _ in range(producers):
        ar = await store.start_rollout(None)
        per = batches // producers
        jobs.append(
            [_batch(ar.rollout_id, ar.attempt.attempt_id, b * 512 + 1, 512) for b in range(per)]
        )

    async def produce(mine: list[list[Span]]) -> None:
        for b in mine:
            await store.add_many_spans(b)

    n = sum(len(b) for mine in jobs for b in mine)
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(produce(mine) for mine in jobs))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, cpu / n * 1e6


async def _query(store: LightningStore) -> dict[int, tuple[float, float]]:
    ar = await store.start_rollout(None)
    for b in range(20):
        await store.add_many_spans(_batch(ar.rollout_id, ar.attempt.attempt_id, b * 500 + 1, 500))
    out = {}
    for n in (1000, 10000):
        best_models = best_json = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            page = await store.query_spans(ar.rollout_id, limit=n)
            best_models = min(best_models, time.perf_counter() - t)
            t = time.perf_counter()
            texts, _ = await store.query_spans_json(ar.rollout_id, limit=n)
            best_json = min(best_json, time.perf_counter() - t)
            assert len(page) == len(texts) == n
        out[n] = (best_models * 1000, best_json * 1000)
    return out


async def _run(name: str, options: dict[str, Any], batches: int) -> None:
    for producers in (1, 8):
        store = create_store(options["backend"], scan_interval=0, **options["kw"])
        await store.start()
        try:
            rate, cpu_us = await _ingest(store, producers, batches)
        finally:
            await store.close()
        print(
            f"{name:14s} ingest, {producers} producer(s): {rate:>9,.0f} spans/s "
            f"({cpu_us:.1f} us CPU per span)"
        )
    store = create_store(options["backend"], scan_interval=0, **options["kw"])
    await store.start()
    try:
        for n, (models_ms, json_ms) in (await _query(store)).items():
            print(
                f"{name:14s} read {n:>6,} spans: {models_ms:7.1f} ms as models, "
                f"{json_ms:6.1f} ms as JSON"
            )
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", help="DSN of a scratch PostgreSQL database")
    parser.add_argument("--batches", type=int, default=32, help="batches of 512 per run")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="lightspan-bench-")
    targets: dict[str, dict[str, Any]] = {
        "memory": {"backend": "memory", "kw": {}},
        "sqlite FULL": {"backend": "sqlite", "kw": {"path": f"{tmp}/full.db"}},
        "sqlite NORMAL": {
            "backend": "sqlite",
            "kw": {"path": f"{tmp}/normal.db", "synchronous": "NORMAL"},
        },
    }
    if args.postgres:
        targets["postgres"] = {"backend": "postgres", "kw": {"dsn": args.postgres}}
    for name, options in targets.items():
        asyncio.run(_run(name, options, args.batches))


if __name__ == "__main__":
    main()
