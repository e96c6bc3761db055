"""The engine's own cost per step, so later stages (tracing, export) can be compared to it.

Workloads of no-op async tasks (no work inside a task, so all time is the engine's):
  * sequence   : 10,000 tasks in one sequence
  * fork x8    : 1,250 forks of width 8 in a sequence (10,000 branch tasks)
  * workers    : one organizer-worker step over 10,000 items, concurrency 8
  * raw await  : 10,000 awaits of the same no-op coroutine, no engine (the floor)

Each workload runs ``--repeat`` times; the table shows the best and median microseconds per
step. Run:  .venv/bin/python benchmarks/engine_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lightspan.engine import Workflow, fork, organizer_worker, sequence, task

STEPS = 10_000


async def noop(x):
    return x


def workloads() -> dict[str, tuple[Callable[[], Awaitable[object]], int]]:
    seq = Workflow("seq", sequence("s", *(task(f"t{i}", noop) for i in range(STEPS))))
    width = 8
    forks = Workflow(
        "fork",
        sequence(
            "s",
            *(
                sequence(
                    f"f{i}",
                    fork(f"fork{i}", [task(f"b{j}", noop) for j in range(width)]),
                    task(f"pick{i}", noop),
                )
                for i in range(STEPS // width)
            ),
        ),
    )
    workers = Workflow(
        "workers",
        organizer_worker("ow", task("plan", lambda n: range(n)), task("w", noop), concurrency=8),
    )

    async def raw() -> None:
        for i in range(STEPS):
            await noop(i)

    return {
        "raw await (floor)": (raw, STEPS),
        "sequence": (lambda: seq.run(0), STEPS),
        "fork/join width 8": (lambda: forks.run(0), STEPS + STEPS // 8 * 3),
        "organizer-worker x8": (lambda: workers.run(STEPS), STEPS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    console = Console()
    results: dict[str, list[float]] = {}
    wl = workloads()
    with Progress(console=console) as progress:
        bar = progress.add_task("measuring", total=len(wl) * args.repeat)
        for _ in range(args.repeat):
            # Interleave workloads so machine drift hits all of them alike.
            for name, (fn, steps) in wl.items():
                t0 = time.perf_counter()
                out = asyncio.run(fn())
                dt = time.perf_counter() - t0
                if hasattr(out, "ok") and not out.ok:
                    raise SystemExit(f"{name} failed: {out.error!r}")
                results.setdefault(name, []).append(dt / steps * 1e6)
                progress.advance(bar)
    table = Table(title=f"Engine cost per step (µs), {STEPS:,} steps, best of {args.repeat}")
    table.add_column("workload")
    table.add_column("best µs/step", justify="right")
    table.add_column("median µs/step", justify="right")
    for name, vals in results.items():
        table.add_row(name, f"{min(vals):.2f}", f"{statistics.median(vals):.2f}")
    console.print(table)
    console.print(
        "Steps counted: every task; fork/join also counts each fork, its sequence and the "
        "pick task. The raw-await row is the interpreter's floor, not engine work."
    )


if __name__ == "__main__":
    main()
