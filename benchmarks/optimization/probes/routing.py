"""Would routing long inputs to the baseline keep every answer and still save? (issue 11)

    .venv/bin/python benchmarks/optimization/probes/routing.py [--seed 98] [--tasks 30] [--max-chars 144]

Why: on the development tasks of docs/performance.md 1c' (seed 99) every answer the trainer's
cheaper resource sets changed was on the hardest tasks, and those are the longest inputs; the
goal's reward rule passes only a change that loses no task. A per-task route, the cheaper set for
inputs of at most ``--max-chars`` characters and the baseline for longer ones, is the kind of
per-task choice the oracle makes, with a rule a runner can apply without the answer. The
threshold is fitted on seed 99 before this runs (its shortest hardest input is 145 characters:
144 keeps every input the cheaper sets lost there on the baseline); this measures it on tasks
it was not fitted on (another development seed's train split, never a benchmark test task):
classification x sequence, the baseline (every step on Qwen 1.5B @256), the trainer's two usual
winners (flips.py), and each routed. Cost from the chains' tokens under the CPU price table of
``prices.json`` (and the public flat table); latency from the chains' wall time (two chains in
flight, one per model server, the arms interleaved task by task).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks.optimization.prices import (
    cpu_price_table,
    measured_prices,
    public_price_table,
)
from benchmarks.optimization.probes.flips import (
    BASELINE,
    LARGE,
    SMALL,
    VARIANTS,
    Chain,
    ChainCache,
    lost_and_gained,
    run_arms,
)
from benchmarks.optimization.run import DEFAULT_CACHE
from benchmarks.optimization.tasks import Task, generate
from rich.console import Console
from rich.table import Table

from lightspan.trainer.evaluation.stats import paired_bootstrap_lower

ARMS = ("winner (all three changes)", "winner with the plan on 1.5B @48 concise")


def input_chars(task: Task) -> int:
    """What the route looks at: the length of the task's text (what a runner sees)."""
    return len(task.input["text"])


def routed(
    cheap: dict[str, Chain], base: dict[str, Chain], tasks: list[Task], max_chars: int
) -> dict[str, Chain]:
    """The cheaper set's run for inputs of at most ``max_chars`` characters, else the
    baseline's (the same runs: the servers repeat their answers)."""
    return {t.id: cheap[t.id] if input_chars(t) <= max_chars else base[t.id] for t in tasks}


def _row(
    label: str, got: dict[str, Chain], base: dict[str, Chain], tasks: list[Task], tables: dict
) -> list[str]:
    ids = [t.id for t in tasks]
    mine, theirs = [got[i].reward for i in ids], [base[i].reward for i in ids]
    cells = [label, f"{sum(mine):.0f}/{len(ids)}"]
    if got is base:
        cells += ["", ""]
    else:
        lost, gained = lost_and_gained(got, base, tasks)
        cells += [
            f"{len(lost)} / {len(gained)}",
            f"{paired_bootstrap_lower(mine, theirs):+.3f}",
        ]
    for prices in tables.values():
        cost = statistics.mean(got[i].cost(prices) for i in ids) * 1e6
        base_cost = statistics.mean(base[i].cost(prices) for i in ids) * 1e6
        cut = "" if got is base else f" ({cost / base_cost - 1:+.0%})"
        cells.append(f"{cost:.1f}{cut}")
    p50 = statistics.median(got[i].seconds for i in ids)
    base_p50 = statistics.median(base[i].seconds for i in ids)
    cells.append(f"{p50:.1f}" + ("" if got is base else f" ({p50 / base_p50 - 1:+.0%})"))
    return cells


async def main_async(args: argparse.Namespace) -> int:
    console = Console()
    tasks = generate("classification", "train", args.tasks, seed=args.seed)
    arms = {"baseline": BASELINE, **{a: VARIANTS[a] for a in ARMS}}
    results = await run_arms(arms, tasks, ChainCache(args.cache), console)
    measured = measured_prices([SMALL, LARGE], DEFAULT_CACHE / "prices.json")
    tables = {"CPU µUSD/run": cpu_price_table(measured), "public µUSD/run": public_price_table()}
    long = sum(input_chars(t) > args.max_chars for t in tasks)
    table = Table(
        title=f"classification x sequence, {len(tasks)} tasks (seed {args.seed}, train split); "
        f"routed: inputs over {args.max_chars} characters ({long} tasks) on the baseline"
    )
    for col in ("arm", "right", "lost / gained", "lower bound", *tables, "p50 s"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    base = results["baseline"]
    table.add_row(*_row("baseline (Qwen 1.5B @256 on every step)", base, base, tasks, tables))
    for arm in ARMS:
        table.add_row(*_row(arm, results[arm], base, tasks, tables))
        route = routed(results[arm], base, tasks, args.max_chars)
        table.add_row(*_row(f"  routed at {args.max_chars} characters", route, base, tasks, tables))
    console.print(table)
    for arm in ARMS:
        lost, _ = lost_and_gained(results[arm], base, tasks)
        where = ", ".join(f"{t.id} (d{t.difficulty}, {input_chars(t)} chars)" for t in lost)
        console.print(f"{arm}: lost {where or 'none'}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--seed", type=int, default=98, help="task seed (98: not a benchmark seed)")
    ap.add_argument(
        "--max-chars",
        type=int,
        default=144,
        help="inputs longer than this go to the baseline (144: fitted on seed 99, see above)",
    )
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "flips.jsonl")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
