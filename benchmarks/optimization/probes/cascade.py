"""Would a checked cascade keep extraction x organizer_worker's answers on the cheaper worker? (issue 11)

    .venv/bin/python benchmarks/optimization/probes/cascade.py [--tasks 30] [--seed 99]

Why: on extraction x organizer_worker the one lever, the worker on Qwen 0.5B, wins some tasks
and loses others, so no single configuration held (docs/performance.md 1a), while the oracle,
choosing the model per task, cut 32-49 %. A cascade (FrugalGPT; trainer-notes) asks the cheap
model first and the strong one only when a check rejects the cheap answer. The worker's answer
has a check a user would write without any gold answer: an extracted value is copied from the
text, so a value that is not in the text (a sentence about it, a field name, a made-up value) is
wrong. This asks both models for every field of each task (the workflow's ``item`` request:
temperature 0, ``max_tokens`` 256) on a development seed's train split (never a benchmark test
task) and prints, for the worker on 1.5B (the baseline), on 0.5B, and on 0.5B escalating a
field to 1.5B when its value is not in the text: the reward, the calls, the cost (CPU price
table of ``prices.json``) and the answers changed against the baseline. Servers: one slot, no
prompt cache (``determinism.py``); answers are cached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import httpx
from benchmarks.optimization import steps
from benchmarks.optimization.evaluators import extraction_reward
from benchmarks.optimization.prices import cpu_price_table, measured_prices
from benchmarks.optimization.probes.answers import Answer, AnswerCache, ask, collect
from benchmarks.optimization.probes.flips import LARGE, SMALL
from benchmarks.optimization.run import DEFAULT_CACHE
from benchmarks.optimization.tasks import Task, generate
from benchmarks.optimization.workflows import PROMPTS
from rich.console import Console
from rich.table import Table

from lightspan.engine import PriceTable


def item_request(model: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """The chat request the organizer-worker workflow's worker sends for one item."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPTS["extraction"]["item"].format(**item)}],
        "max_tokens": 256,
        "temperature": 0.0,
    }


async def ask_items(client: httpx.AsyncClient, url: str, model: str, task: Task) -> list[Answer]:
    """The worker's answer for each field of the task, one request after the other."""
    return [
        await ask(client, url, item_request(model, it)) for it in steps.split_fields(task.input)
    ]


def figures(
    task: Task, small: Sequence[Answer], large: Sequence[Answer], prices: PriceTable
) -> dict[str, dict[str, float]]:
    """Per arm: reward, calls, cost and sequential seconds of the worker on one task."""
    items = steps.split_fields(task.input)
    passed = [steps.value_in_text(a["text"], it) for a, it in zip(small, items, strict=True)]

    ctx = SimpleNamespace(input=task.input)  # what merge_fields reads of the run

    def arm(
        answers: Sequence[Sequence[Answer]], models: Sequence[Sequence[str]]
    ) -> dict[str, float]:
        texts = [a[-1]["text"] for a in answers]
        calls = [
            (m, a)
            for ms, aa in zip(models, answers, strict=True)
            for m, a in zip(ms, aa, strict=True)
        ]
        return {
            "reward": extraction_reward(task.input, steps.merge_fields(texts, ctx), task.expected),
            "calls": float(len(calls)),
            "cost": sum(prices.cost(m, a["in"], a["out"])[0] for m, a in calls),
            "s": sum(a["s"] for _, a in calls),
            "escalated": float(sum(len(ms) > 1 for ms in models)),
        }

    cascade = [[s] if ok else [s, g] for s, g, ok in zip(small, large, passed, strict=True)]
    cascade_models = [[SMALL] if ok else [SMALL, LARGE] for ok in passed]
    return {
        "worker on 1.5B (the baseline)": arm([[g] for g in large], [[LARGE]] * len(large)),
        "worker on 0.5B": arm([[s] for s in small], [[SMALL]] * len(small)),
        "0.5B, escalating a value not in the text": arm(cascade, cascade_models),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--seed", type=int, default=99, help="task seed (99: not a benchmark seed)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "cascade.jsonl")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 150))
    tasks = generate("extraction", "train", args.tasks, seed=args.seed)
    cache = AnswerCache(args.cache)
    asyncio.run(collect(tasks, cache, ask_items, console))
    prices = cpu_price_table(measured_prices([SMALL, LARGE], DEFAULT_CACHE / "prices.json"))
    per_task = [
        figures(t, cache.rows[(t.id, SMALL)], cache.rows[(t.id, LARGE)], prices) for t in tasks
    ]
    base = "worker on 1.5B (the baseline)"
    table = Table(
        title=f"extraction x organizer_worker, seed {args.seed} train split, {len(tasks)} tasks"
    )
    for col in (
        "worker",
        "reward",
        "tasks higher / lower",
        "calls/run",
        "fields escalated",
        "cost/run µUSD",
        "cost cut",
        "worker s/run",
    ):
        table.add_column(col, justify="left" if col == "worker" else "right")
    n = len(tasks)
    base_cost = sum(f[base]["cost"] for f in per_task) / n
    fields = sum(len(steps.split_fields(t.input)) for t in tasks)
    for name in per_task[0]:
        rows = [f[name] for f in per_task]
        hi = sum(f[name]["reward"] > f[base]["reward"] + 1e-9 for f in per_task)
        lo = sum(f[name]["reward"] < f[base]["reward"] - 1e-9 for f in per_task)
        cost = sum(r["cost"] for r in rows) / n
        table.add_row(
            name,
            f"{sum(r['reward'] for r in rows) / n:.3f}",
            f"{hi} / {lo}",
            f"{sum(r['calls'] for r in rows) / n:.2f}",
            f"{sum(r['escalated'] for r in rows):.0f} of {fields}",
            f"{cost * 1e6:.1f}",
            f"{1 - cost / base_cost:.0%}",
            f"{sum(r['s'] for r in rows) / n:.1f}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
