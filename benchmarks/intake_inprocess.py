"""The store's intake path in one process: convert OTLP bodies and store them into SQLite.

What it measures: this process's CPU time per span for the server's work on an export, without
the network and the HTTP/gRPC stacks (so without their noise, and with a finer clock than the
server's ``/proc`` CPU ticks that ``store_ingest.py`` reads): ``bench_common``'s realistic
bodies (60 requests of 512 spans over 64 attempts), a fresh SQLite store per round.

It imports the intake by its current module paths or, failing that, by those before the store's
folders (issue 14), so the same script measures two versions side by side: run it with each
checkout's interpreter, alternately. ``LIGHTSPAN_NATIVE_INTAKE=0``: the Python converter.

Usage: ``.venv/bin/python benchmarks/intake_inprocess.py [--rounds 3] [--batches 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import Attempt, workload

try:
    from lightspan.store.backends.sqlite import SqliteLightningStore
    from lightspan.store.intake.convert import convert
    from lightspan.store.intake.ingest import ingest

    def intake(store: Any, body: bytes) -> Any:
        return ingest(store, convert(body))

    VERSION = "one conversion (issue 14)"
except ImportError:  # the code before issue 14
    from lightspan.store.sqlite import SqliteLightningStore  # type: ignore[no-redef]

    from lightspan.store.intake import convert_protobuf, ingest_span_dicts  # type: ignore

    def intake(store: Any, body: bytes) -> Any:
        return ingest_span_dicts(store, convert_protobuf(store, body))

    VERSION = "before issue 14"


async def one_round(bodies: list[bytes], db: Path) -> float:
    store = SqliteLightningStore(db, scan_interval=0)
    await store.start()
    try:
        cpu = time.process_time()
        for body in bodies:
            await intake(store, body)
        return (time.process_time() - cpu) * 1e6 / (len(bodies) * 512)
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    attempts = [Attempt(f"ro-{i:012x}", f"at-{i:08x}") for i in range(64)]
    bodies = workload("realistic", attempts, args.batches, 512, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        cpus = [await one_round(bodies, Path(tmp) / f"r{r}.db") for r in range(args.rounds)]
    print(
        f"{VERSION}: convert + store into SQLite, {len(bodies) * 512} spans: "
        f"{statistics.median(cpus):.2f} ({min(cpus):.2f}-{max(cpus):.2f}) us CPU/span, "
        f"rounds: {' '.join(f'{c:.2f}' for c in cpus)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
