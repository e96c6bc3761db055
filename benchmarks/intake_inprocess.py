"""The store's intake path in one process: convert OTLP bodies and store them into SQLite.

What it measures: this process's CPU time per span for the server's work on an export, without
the network and the HTTP/gRPC stacks (so without their noise, and with a finer clock than the
server's ``/proc`` CPU ticks that ``store_ingest.py`` reads): ``bench_common``'s realistic
bodies (60 requests of 512 spans over 64 attempts), a fresh SQLite store per round.

It imports the intake by its current module paths or, failing that, by those before the store's
folders (issue 14), so the same script measures two versions side by side: run it with each
checkout's interpreter, alternately. ``LIGHTSPAN_NATIVE_INTAKE=0``: the Python converter.

``--instructions``: instead of CPU time, the instructions the intake executes per request,
counted by valgrind's callgrind (run twice, with a few warm-up requests and with all of them:
the difference is the requests' own work, imports and start-up cancel out), by component. Why:
on these shared 2-core machines CPU time moves by 10-30 % between runs of the same code, while
an instruction count repeats to within 0.1 %, so a change of a few % is visible in one run.
Instructions are not time (the Python interpreter runs fewer per cycle than the Rust
converter), so a cut is confirmed in CPU time too, when the machine is quiet. Needs
``valgrind`` (Debian: ``apt install valgrind``); 5-10 minutes.

``--gc-threshold N``: the garbage collector's young-generation threshold (the server process
raises it to 50,000, ``server.app._tune_gc``; this process keeps Python's 700 unless told);
every run prints the collections and their time per request.

Usage: ``.venv/bin/python benchmarks/intake_inprocess.py [--rounds 3] [--batches 60]
[--instructions] [--gc-threshold N]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
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


class GcClock:
    """The cyclic garbage collector's collections and time while the requests are stored (the
    server process collects far less often: ``--gc-threshold``)."""

    def __init__(self) -> None:
        self.collections = 0
        self.seconds = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.collections += 1
            self.seconds += time.perf_counter() - self._start


async def one_round(bodies: list[bytes], db: Path, clock: GcClock) -> float:
    store = SqliteLightningStore(db, scan_interval=0)
    await store.start()
    gc.callbacks.append(clock)
    try:
        cpu = time.process_time()
        for body in bodies:
            await intake(store, body)
        return (time.process_time() - cpu) * 1e6 / (len(bodies) * 512)
    finally:
        gc.callbacks.remove(clock)
        await store.close()


WARM = 10
"""Requests stored before the counted ones in ``--instructions`` (caches, first chunks)."""

COMPONENTS = (
    ("_otlp_native", "Rust converter (native/)"),
    ("backend_c", "zstd (chunk compression)"),
    ("libpython", "Python interpreter"),
    ("libc.so", "libc (memcpy, memset, malloc)"),
    ("libsqlite3", "SQLite"),
    ("orjson", "orjson"),
    ("_pydantic_core", "pydantic-core"),
)


def _by_component(callgrind_out: Path) -> Counter[str]:
    """Instructions per component (shared object) of one callgrind run."""
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(callgrind_out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out: Counter[str] = Counter()
    for line in text.splitlines():
        m = re.match(r"\s*([0-9,]+) .*\[(.*)\]\s*$", line)
        if not m:
            continue
        obj = Path(m.group(2)).name
        label = next((name for key, name in COMPONENTS if key in obj), "other")
        out[label] += int(m.group(1).replace(",", ""))
    return out


def instructions(batches: int) -> None:
    """Run this script under callgrind twice (``WARM`` requests, then all) and print the
    instructions per request of the difference, by component."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        sys.exit("--instructions needs valgrind (apt install valgrind)")
    counts: dict[int, Counter[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (WARM, batches):
            print(
                f"callgrind: storing {n} of {batches} requests (a few minutes under valgrind)...",
                flush=True,
            )
            out = Path(tmp) / f"cg-{n}.out"
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    __file__,
                    "--batches",
                    str(batches),
                    "--store-only",
                    str(n),
                ],
                check=True,
                capture_output=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            counts[n] = _by_component(out)
    n = batches - WARM
    per = {k: (counts[batches][k] - counts[WARM][k]) / n for k in counts[batches]}
    total = sum(per.values())
    print(
        f"{VERSION}: instructions per request of 512 realistic spans (callgrind, "
        f"{n} requests after {WARM}): {total / 1e6:.2f} M ({total / 512:,.0f} per span)"
    )
    for label, value in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"  {label:32} {value / 1e6:7.2f} M  {value / total:6.1%}")


async def store_only(bodies: list[bytes], n: int) -> None:
    """The ``--instructions`` child: the first ``n`` bodies into a fresh store (every body is
    generated in both runs, so only the storing differs)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteLightningStore(Path(tmp) / "s.db", scan_interval=0)
        await store.start()
        try:
            for body in bodies[:n]:
                await intake(store, body)
        finally:
            await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--instructions", action="store_true", help="count instructions (valgrind)")
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=None,
        help="the young generation's threshold (the server process raises it to 50,000: "
        "server.app._tune_gc); default: Python's (700)",
    )
    parser.add_argument("--store-only", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gc_threshold is not None:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    if args.instructions:
        instructions(args.batches)
        return
    attempts = [Attempt(f"ro-{i:012x}", f"at-{i:08x}") for i in range(64)]
    bodies = workload("realistic", attempts, args.batches, 512, seed=1)
    if args.store_only is not None:
        await store_only(bodies, args.store_only)
        return
    clock = GcClock()
    with tempfile.TemporaryDirectory() as tmp:
        cpus = [await one_round(bodies, Path(tmp) / f"r{r}.db", clock) for r in range(args.rounds)]
    requests = len(bodies) * args.rounds
    print(
        f"{VERSION}: convert + store into SQLite, {len(bodies) * 512} spans: "
        f"{statistics.median(cpus):.2f} ({min(cpus):.2f}-{max(cpus):.2f}) us CPU/span, "
        f"rounds: {' '.join(f'{c:.2f}' for c in cpus)}; garbage collector (threshold "
        f"{gc.get_threshold()[0]}): {clock.collections / requests:.2f} collections, "
        f"{clock.seconds * 1e6 / requests:.0f} us per request"
    )


if __name__ == "__main__":
    asyncio.run(main())
