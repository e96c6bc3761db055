"""Which per-task signal would flag the answers a cheaper set loses? (issue 11)

    .venv/bin/python benchmarks/optimization/probes/escalation.py [--seeds 99,98] [--tasks 30]

Why: the trainer's cheaper sets on classification x sequence save 60-75 % and lose about one
answer in 30 to the baseline (docs/performance.md 1c', 1c''), and the goal's reward rule passes
only a change that loses none on ten test tasks. A cascade (FrugalGPT, RouteLLM; trainer-notes)
runs the cheaper set and re-runs a task on the baseline when a signal says the cheap answer may
be wrong; it keeps every answer if the signal flags every lost task, and saves if it flags few
others. Input length (routing.py) flagged the lost tasks on development seeds and missed a
level-2 loss on a benchmark seed; the format's label probability did not flag them (1c'). This
measures, on development seeds' train splits (never a benchmark test task), for the trainer's two
usual winners:

- **the steps' own confidence**, read from the tokens they wrote (``flips.confidence``): per
  signal, the share of tasks a threshold must escalate to catch every lost task (in-sample: the
  lowest that catches them; a good signal catches them with few others);
- **agreement with a direct answer** (the family's one-call prompt, ``PROMPTS[...]["answer"]``,
  8 tokens, on Qwen 1.5B and on Qwen 0.5B, and on Qwen 1.5B with the input's sentences in
  reverse order): escalate when its label differs from the cheap run's, or when either 1.5B
  check's does. No threshold to fit: the rule is the same on every seed.

For each, what the cascade would cost (the cheap run, the check, and the baseline's run on
escalated tasks, under the CPU price table of ``prices.json``), its p50 (the same, in sequence)
and the answers it still loses. The runs are flips.py's (same cache, same servers: one slot, no
prompt cache, so every arm's answer is a measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import httpx
from benchmarks.optimization.evaluators import classification_reward, first_label
from benchmarks.optimization.prices import cpu_price_table, measured_prices
from benchmarks.optimization.probes.flips import (
    BASELINE,
    LARGE,
    SMALL,
    VARIANTS,
    Chain,
    ChainCache,
    Step,
    _ask,
    _p_first,
    lost_and_gained,
    model_servers,
    run_arms,
)
from benchmarks.optimization.run import DEFAULT_CACHE
from benchmarks.optimization.steps import sentences
from benchmarks.optimization.tasks import Task, generate
from benchmarks.optimization.workflows import PROMPTS
from rich.console import Console
from rich.table import Table

from lightspan.engine import PriceTable
from lightspan.trainer.data import TaskFileError, load_tasks

ARMS: dict[str, dict[str, Step]] = {
    "winner (all three changes)": VARIANTS["winner (all three changes)"],
    "winner with the plan on 1.5B @48 concise": VARIANTS[
        "winner with the plan on 1.5B @48 concise"
    ],
    # The winner the trainer's test gate refused on benchmark seed 5 (docs/performance.md 1c'').
    "seed 5's winner (plan on 0.5B @42, solve @20)": {
        "plan": (SMALL, 42, ""),
        "solve": (LARGE, 20, ""),
        "format": (LARGE, 256, ""),
    },
}
DEFAULT_ARMS = tuple(ARMS)[:2]
CHECKS: dict[str, tuple[Step, bool]] = {
    "direct answer, Qwen 1.5B": ((LARGE, 8, ""), False),
    "direct answer, Qwen 0.5B": ((SMALL, 8, ""), False),
    # The same with the input's sentences in reverse order: a check that reads the text in
    # another order, so that it need not share the cheap run's pull towards the first sentence
    # (chosen after seeing seed 5's two losses, docs/performance.md 1c''').
    "direct answer, sentences reversed, Qwen 1.5B": ((LARGE, 8, ""), True),
}
EITHER = ("direct answer, Qwen 1.5B", "direct answer, sentences reversed, Qwen 1.5B")
"""Escalate when either of these disagrees with the cheap run (both checks paid for)."""
# Lower = less sure; a task is escalated when its value is at or below the threshold.
SIGNALS = (
    "plan_mean_lp",
    "solve_mean_lp",
    "solve_min_p",
    "solve_label_p",
    "solve_label_margin",
    "format_mean_lp",
    "format_label_p",
    "format_label_margin",
)


async def run_check(
    client: httpx.AsyncClient, url: str, step: Step, task: Task, reverse: bool = False
) -> Chain:
    """The family's one-call answer (``PROMPTS[family]["answer"]``) as a one-step run; with
    ``reverse``, on the input's sentences in reverse order."""
    tokens: dict[str, list[int]] = {}
    t0 = time.monotonic()
    inp = task.input
    if reverse:
        inp = {**inp, "text": " ".join(reversed(sentences(inp["text"])))}
    out, lp = await _ask(
        client, url, PROMPTS["classification"]["answer"].format(**inp), step, tokens
    )
    reward = classification_reward(task.input, out, task.expected)
    label = first_label(out, task.input["labels"])
    return Chain(reward, _p_first(lp), tokens, time.monotonic() - t0, {}, label)


async def run_checks(
    tasks: list[Task], cache: ChainCache, console: Console, urls: dict[str, str]
) -> dict[str, dict[str, Chain]]:
    """Every check on every task (cached like the chains: a check is a one-step configuration),
    on the servers at ``urls`` (:func:`flips.model_servers`)."""
    out: dict[str, dict[str, Chain]] = {c: {} for c in CHECKS}
    async with httpx.AsyncClient() as client:
        for name, (step, reverse) in CHECKS.items():
            for task in tasks:
                key = cache.key({"check_reversed" if reverse else "check": step}, task)
                if key not in cache.rows:
                    got = await run_check(client, urls[step[0]], step, task, reverse)
                    cache.put(key, got)
                out[name][task.id] = cache.rows[key]
            console.print(f"{name}: {len(tasks)} tasks")
    return out


def cascade(
    cheap: dict[str, Chain],
    base: dict[str, Chain],
    tasks: list[Task],
    escalate: Callable[[Task], bool],
    prices: PriceTable,
    checks: Sequence[dict[str, Chain]] = (),
) -> dict[str, float]:
    """The cascade's figures: escalated share, answers lost to the baseline, cost (µUSD/run)
    and p50 seconds (cheap run, then the check, then the baseline's run when escalated)."""
    lost = esc = 0
    costs: list[float] = []
    secs: list[float] = []
    for t in tasks:
        up = escalate(t)
        esc += up
        final = base[t.id] if up else cheap[t.id]
        lost += final.reward < base[t.id].reward
        c = cheap[t.id].cost(prices) + (base[t.id].cost(prices) if up else 0.0)
        s = cheap[t.id].seconds + (base[t.id].seconds if up else 0.0)
        for check in checks:
            c += check[t.id].cost(prices)
            s += check[t.id].seconds
        costs.append(c)
        secs.append(s)
    return {
        "escalated": esc / len(tasks),
        "lost": lost,
        "cost": statistics.mean(costs) * 1e6,
        "p50": statistics.median(secs),
    }


def catch_all(cheap: dict[str, Chain], lost: list[Task], signal: str) -> float | None:
    """The lowest threshold that escalates every lost task (a missing value escalates)."""
    values = [cheap[t.id].signals.get(signal) for t in lost]
    if any(v is None for v in values):
        return float("inf")
    return max(values) if values else None  # type: ignore[type-var]


def read_tasks(path: Path) -> list[Task]:
    """A trainer's task file, read and checked as the trainer reads it (``load_tasks``: errors
    name the file and line), as classification tasks (difficulty unknown: 0)."""
    return [Task(t.id, "classification", 0, t.input, t.expected) for t in load_tasks(path)]


def arm_table(
    title: str,
    cheap: dict[str, Chain],
    base: dict[str, Chain],
    checks: dict[str, dict[str, Chain]],
    tasks: list[Task],
    prices: PriceTable,
    fixed: Mapping[str, float] | None = None,
) -> Table:
    """One cheaper set's cascades: never escalating, each check, each signal's catch-all, and
    each ``fixed`` threshold (chosen on other tasks: out of sample here)."""
    base_cost = statistics.mean(base[t.id].cost(prices) for t in tasks) * 1e6
    base_p50 = statistics.median(base[t.id].seconds for t in tasks)
    lost, gained = lost_and_gained(cheap, base, tasks)
    where = ", ".join(f"{t.id} {len(t.input['text'])} chars" for t in lost) or "none"
    table = Table(
        title=f"{title}, lost {len(lost)} / gained {len(gained)} ({where}); "
        f"baseline {base_cost:.1f} µUSD/run, p50 {base_p50:.1f} s"
    )
    for col in ("escalate when", "escalated", "still lost", "CPU µUSD/run (cut)", "p50 s (cut)"):
        table.add_column(col, justify="left" if col == "escalate when" else "right")

    def row(label: str, fig: dict[str, float]) -> None:
        table.add_row(
            label,
            f"{fig['escalated']:.0%}",
            str(fig["lost"]),
            f"{fig['cost']:.1f} ({fig['cost'] / base_cost - 1:+.0%})",
            f"{fig['p50']:.1f} ({fig['p50'] / base_p50 - 1:+.0%})",
        )

    row("never (the cheaper set alone)", cascade(cheap, base, tasks, lambda t: False, prices))
    for name, got in checks.items():
        disagrees = lambda t, got=got: got[t.id].label != cheap[t.id].label  # noqa: E731
        row(f"{name} disagrees", cascade(cheap, base, tasks, disagrees, prices, [got]))
    pair = [checks[n] for n in EITHER]
    either = lambda t: any(c[t.id].label != cheap[t.id].label for c in pair)  # noqa: E731
    row("either of those on Qwen 1.5B disagrees", cascade(cheap, base, tasks, either, prices, pair))
    for signal in SIGNALS:
        tau = catch_all(cheap, lost, signal)
        if tau is None:
            continue  # nothing lost: no threshold to fit
        unsure = lambda t, s=signal, tau=tau: cheap[t.id].signals.get(s, -math.inf) <= tau  # noqa: E731
        row(f"{signal} <= {tau:.3f} (in-sample)", cascade(cheap, base, tasks, unsure, prices))
    for signal, tau in (fixed or {}).items():
        unsure = lambda t, s=signal, tau=tau: cheap[t.id].signals.get(s, -math.inf) <= tau  # noqa: E731
        row(f"{signal} <= {tau:.3f} (fixed)", cascade(cheap, base, tasks, unsure, prices))
    return table


async def main_async(args: argparse.Namespace) -> int:
    console = Console()
    measured = measured_prices([SMALL, LARGE], DEFAULT_CACHE / "prices.json")
    prices = cpu_price_table(measured)
    cache = ChainCache(args.cache)
    arms = {"baseline": BASELINE, **{a: ARMS[a] for a in args.arms}}
    task_sets = {
        f"seed {seed}": generate("classification", "train", args.tasks, seed=seed)
        for seed in args.seeds
    }
    if args.tasks_file:
        try:
            task_sets = {str(args.tasks_file): read_tasks(args.tasks_file)}
        except TaskFileError as e:
            console.print(f"[red]--tasks-file: {e}[/red]")
            return 2
    with model_servers() as urls:  # once for every task set
        for where, tasks in task_sets.items():
            results = await run_arms(arms, tasks, cache, console, urls)
            checks = await run_checks(tasks, cache, console, urls)
            for name, got in checks.items():
                right = sum(c.reward for c in got.values())
                console.print(f"{where}: {name} right on {right:.0f}/{len(tasks)}")
            for arm in args.arms:
                title = f"{where}, {len(tasks)} tasks: {arm}"
                base = results["baseline"]
                table = arm_table(title, results[arm], base, checks, tasks, prices, args.apply)
                console.print(table)
    return 0


def _threshold(text: str) -> tuple[str, float]:
    signal, sep, value = text.partition("=")
    if not sep or signal not in SIGNALS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected SIGNAL=VALUE, SIGNAL one of {SIGNALS}"
        )
    try:
        return signal, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument(
        "--seeds",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[99, 98],
        help="development task seeds (99, 98: not benchmark seeds)",
    )
    ap.add_argument(
        "--arms",
        type=lambda s: s.split(";"),
        default=list(DEFAULT_ARMS),
        help=f"cheaper sets, ';'-separated, of: {'; '.join(ARMS)} (default: the first two)",
    )
    ap.add_argument(
        "--tasks-file",
        type=Path,
        help="a trainer's tasks.jsonl to run instead of --seeds (e.g. a benchmark run's "
        "OUT/trainer/classification-sequence/tasks.jsonl: tasks its trainer saw, not the "
        "benchmark's test split)",
    )
    ap.add_argument(
        "--apply",
        action="append",
        type=_threshold,
        default=[],
        metavar="SIGNAL=VALUE",
        help=f"also escalate at this fixed threshold (repeatable); signals: {', '.join(SIGNALS)}",
    )
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "flips.jsonl")
    args = ap.parse_args()
    args.apply = dict(args.apply)
    if unknown := [a for a in args.arms if a not in ARMS]:
        ap.error(f"--arms: unknown {unknown}; known: {list(ARMS)}")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
