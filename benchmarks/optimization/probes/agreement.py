"""How often do a vote's first two branches agree, and what would a lazy vote save? (issue 11)

    .venv/bin/python benchmarks/optimization/probes/agreement.py [--families extraction,classification]
        [--tasks 30] [--seed 99]

Why: the vote shape runs three sampled branches of one prompt and keeps the majority answer;
when the first two agree, the third cannot change a whole-answer majority, so the engine's
``join: majority`` starts it only when they disagree. What that saves depends on how often they
agree, and the field-by-field JSON vote of extraction can still take a field only the third
branch wrote, so it can change answers there. This asks each model for the three branches'
answers (the vote workflow's request: its prompt, temperature and per-branch seed) on tasks of a
development seed's train split (never a benchmark test task), and per branch-model assignment
(branch a, b, c) prints: the tasks where the first two agree (``agree_*`` of ``steps.py``), the
reward of the full vote and of the lazy one (the family's reducer on the branches it ran), the
branch calls, and the cost (CPU price table of ``prices.json``) and wall time (one request slot
per server: the branches one after the other) of both. Servers: one slot, no prompt cache, so a
branch's answer does not depend on the others (``determinism.py``); answers are cached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import httpx
from benchmarks.optimization import evaluators, steps
from benchmarks.optimization.prices import cpu_price_table, measured_prices
from benchmarks.optimization.probes.answers import Answer, AnswerCache, ask, collect
from benchmarks.optimization.probes.flips import LARGE, SMALL
from benchmarks.optimization.run import DEFAULT_CACHE
from benchmarks.optimization.tasks import Task, generate
from benchmarks.optimization.workflows import PROMPTS, VOTE_BRANCHES, VOTE_TEMPERATURE
from rich.console import Console
from rich.table import Table

from lightspan.engine import PriceTable

Branch = Answer
"""One branch's answer."""
ASSIGNMENTS: dict[str, tuple[str, str, str]] = {
    "a, b, c on 1.5B (the baseline)": (LARGE, LARGE, LARGE),
    "a on 0.5B": (SMALL, LARGE, LARGE),
    "a, b on 0.5B": (SMALL, SMALL, LARGE),
    "a, b, c on 0.5B": (SMALL, SMALL, SMALL),
}
_FAMILY: dict[str, tuple[str, str, str]] = {  # agree key, reducer, reward
    "arithmetic": ("agree_number", "vote_number", "arithmetic_reward"),
    "extraction": ("agree_json", "vote_json", "extraction_reward"),
    "classification": ("agree_label", "vote_label", "classification_reward"),
}


def vote_request(model: str, family: str, task: Task, branch: int) -> dict[str, Any]:
    """The chat request the vote workflow's ``branch``-th branch sends (see workflows.py)."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPTS[family]["answer"].format(**task.input)}],
        "max_tokens": 256,
        "temperature": VOTE_TEMPERATURE,
        "seed": branch + 1,
    }


async def ask_branches(client: httpx.AsyncClient, url: str, model: str, task: Task) -> list[Branch]:
    """The three branches' answers, one request after the other."""
    return [
        await ask(client, url, vote_request(model, task.family, task, i))
        for i in range(len(VOTE_BRANCHES))
    ]


def vote_figures(
    family: str,
    task: Task,
    branches: Sequence[Branch],
    models: Sequence[str],
    prices: PriceTable,
) -> dict[str, float]:
    """The full and the lazy vote on one task, from its branches' answers."""
    agree_name, reducer_name, reward_name = _FAMILY[family]
    agree: Callable[[Any], Any] = getattr(steps, agree_name)
    reducer: Callable[[Mapping[str, Any]], Any] = getattr(steps, reducer_name)
    reward: Callable[[Any, Any, Any], float] = getattr(evaluators, reward_name)
    texts = {b: br["text"] for b, br in zip(VOTE_BRANCHES, branches, strict=True)}
    first, second = (agree(texts[b]) for b in VOTE_BRANCHES[:2])
    agreed = first is not None and first == second
    ran = 2 if agreed else 3
    lazy_texts = dict(list(texts.items())[:ran])

    def cost(n: int) -> float:
        return sum(
            prices.cost(m, br["in"], br["out"])[0]
            for m, br in zip(models[:n], branches[:n], strict=True)
        )

    return {
        "agreed": float(agreed),
        "reward_full": reward(task.input, reducer(texts), task.expected),
        "reward_lazy": reward(task.input, reducer(lazy_texts), task.expected),
        "calls_lazy": float(ran),
        "cost_full": cost(3),
        "cost_lazy": cost(ran),
        "s_full": sum(br["s"] for br in branches),
        "s_lazy": sum(br["s"] for br in branches[:ran]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default="extraction,classification")
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--seed", type=int, default=99, help="task seed (99: not a benchmark seed)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "agreement.jsonl")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 150))
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    tasks = {f: generate(f, "train", args.tasks, seed=args.seed) for f in families}
    cache = AnswerCache(args.cache, field="branches")
    asyncio.run(collect([t for ts in tasks.values() for t in ts], cache, ask_branches, console))
    prices = cpu_price_table(measured_prices([SMALL, LARGE], DEFAULT_CACHE / "prices.json"))
    table = Table(title=f"vote, lazy (join: majority) vs full: seed {args.seed}, train split")
    for col in (
        "family",
        "branches",
        "first two agree",
        "reward full -> lazy",
        "calls/run",
        "cost cut",
        "time cut",
        "lazy cost vs the baseline's full vote",
    ):
        table.add_column(col, justify="left" if col in ("family", "branches") else "right")
    for family in families:
        baseline_cost = None
        for name, models in ASSIGNMENTS.items():
            rows = [
                vote_figures(
                    family,
                    t,
                    [cache.rows[(t.id, m)][i] for i, m in enumerate(models)],
                    models,
                    prices,
                )
                for t in tasks[family]
            ]
            n = len(rows)
            if baseline_cost is None:  # the first assignment is the baseline's
                baseline_cost = sum(r["cost_full"] for r in rows)

            def total(key: str, rows: list[dict[str, float]] = rows) -> float:
                return sum(r[key] for r in rows)

            table.add_row(
                family,
                name,
                f"{total('agreed'):.0f}/{n}",
                f"{total('reward_full') / n:.3f} -> {total('reward_lazy') / n:.3f}",
                f"{total('calls_lazy') / n:.2f}",
                f"{100 * (1 - total('cost_lazy') / total('cost_full')):.0f} %",
                f"{100 * (1 - total('s_lazy') / total('s_full')):.0f} %",
                f"{100 * (total('cost_lazy') / baseline_cost - 1):+.0f} %",
            )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
