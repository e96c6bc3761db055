"""Which of the trainer's levers change the baseline's answers, and does a confidence flag them?

    .venv/bin/python benchmarks/optimization/probes/flips.py [--tasks 30] [--seed 99]

Why: the goal of issue 11 asks for equal quality with a one-sided 95 % paired-bootstrap lower
bound of the reward difference >= -0.02; with 0/1 rewards on ten or eleven test tasks that
bound is met only when the optimized workflow loses no task to the baseline (one lost task of
11: -0.27). So what decides the goal is how often a lever turns a right answer into a wrong one.
This runs classification x sequence (plan -> solve -> format, the workflow file's prompts,
temperature 0) under the baseline (every step on Qwen 1.5B @256), the trainer's usual winner
(plan on Qwen 0.5B cut at 48 tokens, solve with the concise prompt, format on Qwen 0.5B) and
each of its three changes alone, and the same with the plan kept on the 1.5B (cut at 48 tokens,
concise prompt) instead of moved to the 0.5B, on tasks of a development seed's train split (never a
benchmark test task), and counts per variant the tasks it loses and gains against the baseline,
by difficulty. It also records the probability of the format step's first answer token (the
label), to see whether a confidence-based cascade (escalate to the baseline when the cheap
run is unsure) would catch the lost tasks; every chain also keeps each step's confidence
(:func:`confidence`) and its answer's label, which escalation.py reads. Servers: one slot, no
prompt cache (repeatable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import httpx
from benchmarks.optimization.evaluators import classification_reward, first_label
from benchmarks.optimization.run import DEFAULT_CACHE
from benchmarks.optimization.tasks import Task, generate
from benchmarks.optimization.workflows import PROMPTS
from rich.console import Console
from rich.table import Table

from lightspan.engine import PriceTable
from lightspan.localllm.server import LocalModelServer
from lightspan.trainer.search.cost import CONCISE_SUFFIX

SMALL, LARGE = "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"
Step = tuple[str, int, str]  # model, max_tokens, prompt suffix
BASELINE: dict[str, Step] = {s: (LARGE, 256, "") for s in ("plan", "solve", "format")}
VARIANTS: dict[str, dict[str, Step]] = {
    "winner (all three changes)": {
        "plan": (SMALL, 48, ""),
        "solve": (LARGE, 256, CONCISE_SUFFIX),
        "format": (SMALL, 256, ""),
    },
    "plan on 0.5B @48 alone": {**BASELINE, "plan": (SMALL, 48, "")},
    "solve concise alone": {**BASELINE, "solve": (LARGE, 256, CONCISE_SUFFIX)},
    "format on 0.5B alone": {**BASELINE, "format": (SMALL, 256, "")},
    "plan on 1.5B @48 concise alone": {**BASELINE, "plan": (LARGE, 48, CONCISE_SUFFIX)},
    "winner with the plan on 1.5B @48 concise": {
        "plan": (LARGE, 48, CONCISE_SUFFIX),
        "solve": (LARGE, 256, CONCISE_SUFFIX),
        "format": (SMALL, 256, ""),
    },
}
P = PROMPTS["classification"]


@dataclass(slots=True)
class Chain:
    """One run of the three steps: reward, the format answer's first-token probability, tokens
    per model (``{model: [prompt, completion]}``), wall seconds, and per step how sure the model
    was of what it wrote (:func:`confidence`: ``{"solve_mean_lp": ..., ...}``) and the label the
    run answered (escalation.py compares both with a cheap check)."""

    reward: float
    p_first: float | None
    tokens: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0
    signals: dict[str, float] = field(default_factory=dict)
    label: str | None = None

    def cost(self, prices: PriceTable) -> float:
        """USD of the chain's tokens under ``prices`` (a model without a price costs 0)."""
        return sum(prices.cost(m, p, c)[0] for m, (p, c) in self.tokens.items())


async def _ask(
    client: httpx.AsyncClient,
    url: str,
    content: str,
    step: Step,
    tokens: dict[str, list[int]],
) -> tuple[str, list[dict[str, Any]]]:
    """One step's request; its text and the per-token log-probabilities (with the runner-up
    token's: ``top_logprobs`` 2). Asking for them does not change what a greedy decode writes."""
    model, max_tokens, _ = step
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    r = await client.post(f"{url}/chat/completions", json=body, timeout=900)
    r.raise_for_status()
    data = r.json()
    usage = data.get("usage") or {}
    used = tokens.setdefault(model, [0, 0])
    used[0] += int(usage.get("prompt_tokens") or 0)
    used[1] += int(usage.get("completion_tokens") or 0)
    choice = data["choices"][0]
    return choice["message"]["content"], (choice.get("logprobs") or {}).get("content") or []


def _p_first(logprobs: list[dict[str, Any]]) -> float | None:
    return math.exp(logprobs[0]["logprob"]) if logprobs else None


def confidence(step: str, logprobs: list[dict[str, Any]], labels: list[str]) -> dict[str, float]:
    """How sure a step was of what it wrote: the mean log-probability of its tokens, the lowest
    token probability, and the probability of the first token that starts a label (where a
    classification is decided) with its margin over the runner-up token. Empty for no tokens."""
    if not logprobs:
        return {}
    lps = [t["logprob"] for t in logprobs]
    out = {f"{step}_mean_lp": sum(lps) / len(lps), f"{step}_min_p": math.exp(min(lps))}
    for t in logprobs:
        word = t.get("token", "").strip().lower()
        if len(word) >= 3 and any(label.startswith(word) for label in labels):
            top = sorted((x["logprob"] for x in t.get("top_logprobs") or []), reverse=True)
            out[f"{step}_label_p"] = math.exp(t["logprob"])
            out[f"{step}_label_margin"] = math.exp(t["logprob"]) - (
                math.exp(top[1]) if len(top) > 1 else 0.0
            )
            break
    return out


async def run_chain(
    client: httpx.AsyncClient, urls: dict[str, str], cfg: dict[str, Step], task: Task
) -> Chain:
    """The workflow's three LLM steps as the engine runs them (the glue steps strip the text)."""
    inp = task.input
    labels = [x.strip() for x in inp["labels"].split(",")]
    tokens: dict[str, list[int]] = {}
    signals: dict[str, float] = {}
    t0 = time.monotonic()
    plan, lp = await _ask(
        client,
        urls[cfg["plan"][0]],
        (P["plan"] + cfg["plan"][2]).format(**inp),
        cfg["plan"],
        tokens,
    )
    signals |= confidence("plan", lp, labels)
    solve = (P["solve"] + cfg["solve"][2]).format(**inp, plan=plan.strip())
    solution, lp = await _ask(client, urls[cfg["solve"][0]], solve, cfg["solve"], tokens)
    signals |= confidence("solve", lp, labels)
    fmt = (P["format"] + cfg["format"][2]).format(**inp, solution=solution.strip())
    out, lp = await _ask(client, urls[cfg["format"][0]], fmt, cfg["format"], tokens)
    signals |= confidence("format", lp, labels)
    reward = classification_reward(inp, out, task.expected)
    label = first_label(out, labels)
    return Chain(reward, _p_first(lp), tokens, time.monotonic() - t0, signals, label)


class ChainCache:
    """(configuration, task) -> :class:`Chain`, on disk: a rerun with another variant runs only
    that variant (the servers repeat their answers exactly: one slot, no cache)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, Chain] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                if "signals" not in row:  # written before chains recorded them: run it again
                    continue
                self.rows[row["key"]] = Chain(
                    row["reward"],
                    row["p_first"],
                    row["tokens"],
                    row["seconds"],
                    row["signals"],
                    row["label"],
                )

    @staticmethod
    def key(cfg: dict[str, Step], task: Task) -> str:
        return json.dumps([sorted(cfg.items()), P, task.id, task.input], sort_keys=True)

    def put(self, key: str, value: Chain) -> None:
        self.rows[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        row = {
            "key": key,
            "reward": value.reward,
            "p_first": value.p_first,
            "tokens": value.tokens,
            "seconds": value.seconds,
            "signals": value.signals,
            "label": value.label,
        }
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


@contextmanager
def model_servers() -> Iterator[dict[str, str]]:
    """Both models' servers, repeatable (one slot, no prompt cache): ``{model: base URL}``."""
    servers = [LocalModelServer(m, parallel=1, repeatable=True).start() for m in (SMALL, LARGE)]
    try:
        yield {s.model: s.base_url for s in servers}
    finally:
        for s in servers:
            s.stop()


async def run_arms(
    arms: dict[str, dict[str, Step]],
    tasks: list[Task],
    cache: ChainCache,
    console: Console,
    urls: dict[str, str] | None = None,
) -> dict[str, dict[str, Chain]]:
    """Every arm on every task, two chains in flight (one per model server), cached runs
    reused; progress on the console. ``urls``: servers already up (:func:`model_servers`);
    without them the call starts its own."""
    if urls is None:
        with model_servers() as started:
            return await run_arms(arms, tasks, cache, console, started)
    results: dict[str, dict[str, Chain]] = {a: {} for a in arms}
    sem = asyncio.Semaphore(2)  # two chains in flight: the two servers, one core each
    t0 = time.monotonic()
    done = 0
    async with httpx.AsyncClient() as client:

        async def one(arm: str, task: Task) -> None:
            nonlocal done
            key = cache.key(arms[arm], task)
            if key in cache.rows:
                results[arm][task.id] = cache.rows[key]
            else:
                async with sem:
                    results[arm][task.id] = await run_chain(client, urls, arms[arm], task)
                cache.put(key, results[arm][task.id])
            done += 1
            console.print(f"[{time.monotonic() - t0:5.0f} s] {done}/{len(arms) * len(tasks)}")

        await asyncio.gather(*(one(a, t) for t in tasks for a in arms))
    return results


def lost_and_gained(
    got: dict[str, Chain], base: dict[str, Chain], tasks: list[Task]
) -> tuple[list[Task], list[Task]]:
    """The tasks an arm answers worse than the baseline, and those it answers better."""
    lost = [t for t in tasks if got[t.id].reward < base[t.id].reward]
    gained = [t for t in tasks if got[t.id].reward > base[t.id].reward]
    return lost, gained


def _probabilities(lost: list[float], rest: list[float]) -> str:
    """The table's last cell: the lost tasks' label probabilities | the others' median."""
    if not rest:
        return ""
    return f"{' '.join(f'{p:.2f}' for p in lost) or '-'} | {rest[len(rest) // 2]:.2f}"


async def main_async(args: argparse.Namespace) -> int:
    console = Console()
    tasks = generate("classification", "train", args.tasks, seed=args.seed)
    arms = {"baseline": BASELINE, **VARIANTS}
    results = await run_arms(arms, tasks, ChainCache(args.cache), console)

    base = results["baseline"]
    table = Table(
        title=f"classification x sequence, {len(tasks)} tasks (seed {args.seed}, train split): "
        "answers against the baseline's (Qwen 1.5B @256 on every step)"
    )
    for col in (
        "arm",
        "right",
        "lost",
        "gained",
        "lost/gained by difficulty",
        "format's label probability: lost tasks | others (median)",
    ):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for arm in arms:
        got = results[arm]
        lost, gained = lost_and_gained(got, base, tasks)
        by_d = Counter((t.difficulty, "-") for t in lost) + Counter(
            (t.difficulty, "+") for t in gained
        )
        probs_lost = sorted(p for t in lost if (p := got[t.id].p_first) is not None)
        probs_rest = sorted(
            p for t in tasks if t not in lost and (p := got[t.id].p_first) is not None
        )
        table.add_row(
            arm,
            f"{sum(c.reward for c in got.values()):.0f}/{len(tasks)}",
            "" if arm == "baseline" else str(len(lost)),
            "" if arm == "baseline" else str(len(gained)),
            " ".join(f"d{d}{s}{n}" for (d, s), n in sorted(by_d.items())),
            _probabilities(probs_lost, probs_rest),
        )
    console.print(table)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--seed", type=int, default=99, help="task seed (99: not a benchmark seed)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "flips.jsonl")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
