"""The search grid, a disk cache of (configuration, task) runs, and the per-task oracle.

Why a cache: every configuration is run on the real local models, which is slow on 2 cores;
a rerun (another report, another price table, more tasks) only runs what is missing. The
key covers the workflow's definition without endpoints (prompts, structure, sampling), the
configuration and the task, so an edited prompt never reuses stale results.

The oracle, per task: among all configurations of the grid, the best reward reached, and the
cheapest configuration (under a given price table, from the tokens each run really used)
that reaches it. It is the floor no optimizer can beat on that grid.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.optimization.tasks import Task
from benchmarks.optimization.workflows import (
    LLM_STEPS,
    Config,
    StepChoice,
    config_key,
    workflow_spec,
)

from lightspan.engine import PriceTable, Workflow, workflow_from_dict


def search_grid(shape: str, models: Sequence[str], max_tokens: Sequence[int]) -> list[Config]:
    """Per LLM step a model, with one ``max_tokens`` level shared by the steps.

    The vote's branches run one prompt, so only the multiset of their models matters: the
    grid keeps one assignment per multiset (models in the given order, branch a first).
    """
    steps = LLM_STEPS[shape]
    if shape == "vote":
        assignments: Iterable[tuple[str, ...]] = itertools.combinations_with_replacement(
            models, len(steps)
        )
    else:
        assignments = itertools.product(models, repeat=len(steps))
    return [
        {s: StepChoice(m, mt) for s, m in zip(steps, assign, strict=True)}
        for assign in assignments
        for mt in max_tokens
    ]


@dataclass(slots=True)
class RunRecord:
    """One run of one configuration on one task (what the cache keeps)."""

    task_id: str
    config: str
    reward: float
    status: str
    latency_s: float
    calls: list[dict[str, Any]] = field(default_factory=list)
    """Per LLM call: step, model, input_tokens, output_tokens, latency_s."""
    output: str = ""
    error: str | None = None

    def cost(self, prices: PriceTable) -> float:
        return sum(
            prices.cost(c["model"], c["input_tokens"], c["output_tokens"])[0] for c in self.calls
        )

    @property
    def tokens(self) -> int:
        return sum(c["input_tokens"] + c["output_tokens"] for c in self.calls)


class ResultCache:
    """JSONL on disk, one line per run; the last line for a key wins."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rows: dict[str, RunRecord] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    key = row.pop("key")
                    self._rows[key] = RunRecord(**row)

    def get(self, key: str) -> RunRecord | None:
        return self._rows.get(key)

    def put(self, key: str, rec: RunRecord) -> None:
        self._rows[key] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, **asdict(rec)}) + "\n")


def load_spec(spec: Mapping[str, Any]) -> Workflow:
    return workflow_from_dict(dict(spec), source=f"<{spec['workflow']}>", llm_timeout_seconds=600)


def call_records(result: Any) -> list[dict[str, Any]]:
    """A run result's LLM calls as :attr:`RunRecord.calls` keeps them (what prices apply to)."""
    return [
        {
            "step": c.step,
            "model": c.model,
            "input_tokens": c.input_tokens,
            "output_tokens": c.output_tokens,
            "latency_s": c.latency_s,
        }
        for c in result.llm_calls
    ]


async def run_spec(wf: Workflow, spec: Mapping[str, Any], task: Task) -> RunRecord:
    """Run a workflow once on the real models; a failed run scores 0 and keeps its error."""
    t0 = time.perf_counter()
    res = await wf.run(task.input, expected=task.expected)
    latency = time.perf_counter() - t0
    return RunRecord(
        task_id=task.id,
        config=str(spec["resources"]["id"]).split(":", 1)[-1],
        reward=float(res.reward or 0.0),
        status=res.status,
        latency_s=latency,
        calls=call_records(res),
        output=str(res.output)[:500],
        error=repr(res.error) if res.error is not None else None,
    )


def spec_digest(spec: Mapping[str, Any]) -> str:
    """A workflow structure's digest with endpoints blanked (ports change between runs)."""
    blank = json.loads(json.dumps(spec))
    for llm in blank.get("resources", {}).get("llms", {}).values():
        llm["endpoint"] = "-"
    return hashlib.sha256(json.dumps(blank, sort_keys=True).encode()).hexdigest()[:16]


async def evaluate_specs(
    specs: Mapping[str, Mapping[str, Any]],
    tasks: Sequence[Task],
    cache: ResultCache,
    *,
    concurrency: int = 2,
    on_done: Callable[[], None] | None = None,
) -> dict[tuple[str, str], RunRecord]:
    """Every (label, task) result of ``specs`` (label -> workflow structure), cached on disk.

    ``concurrency`` runs at once (the server has 4 request slots; latency is measured under
    this same load for every arm).
    """
    out: dict[tuple[str, str], RunRecord] = {}
    todo: list[tuple[str, str, Mapping[str, Any], Task]] = []
    for label, spec in specs.items():
        digest = spec_digest(spec)
        for t in tasks:
            key = f"{digest}|{label}|{t.id}"
            rec = cache.get(key)
            if rec is None:
                todo.append((key, label, spec, t))
            else:
                out[(label, t.id)] = rec
                if on_done:
                    on_done()
    sem = asyncio.Semaphore(concurrency)
    workflows = {label: load_spec(spec) for label, spec in specs.items()}

    async def one(key: str, label: str, spec: Mapping[str, Any], t: Task) -> None:
        async with sem:
            rec = await run_spec(workflows[label], spec, t)
        rec.config = label
        cache.put(key, rec)
        out[(label, t.id)] = rec
        if on_done:
            on_done()

    try:
        await asyncio.gather(*(one(*job) for job in todo))
    finally:
        for wf in workflows.values():
            await wf.aclose()
    return out


async def evaluate(
    family: str,
    shape: str,
    configs: Sequence[Config],
    tasks: Sequence[Task],
    endpoints: Mapping[str, str],
    cache: ResultCache,
    *,
    concurrency: int = 2,
    on_done: Callable[[], None] | None = None,
    vote_join: str = "all",
) -> dict[tuple[str, str], RunRecord]:
    """Every (configuration key, task) result of the grid ``configs`` on the real models."""
    specs = {
        config_key(c): workflow_spec(family, shape, c, endpoints, vote_join=vote_join)
        for c in configs
    }
    return await evaluate_specs(specs, tasks, cache, concurrency=concurrency, on_done=on_done)


def models_of(config: Config) -> frozenset[str]:
    return frozenset(c.model for c in config.values())


def oracle_choice(
    results: Mapping[tuple[str, str], RunRecord],
    configs: Sequence[Config],
    tasks: Sequence[Task],
    prices: PriceTable,
) -> dict[str, RunRecord]:
    """Per task: the cheapest run among those that reach the task's best reward.

    Ties on cost go to the faster run, then to the configuration's key (deterministic).
    """
    chosen: dict[str, RunRecord] = {}
    keys = [config_key(c) for c in configs]
    for t in tasks:
        runs = [results[(k, t.id)] for k in keys if (k, t.id) in results]
        if not runs:
            continue
        best = max(r.reward for r in runs)
        winners = [r for r in runs if r.reward >= best - 1e-9]
        chosen[t.id] = min(winners, key=lambda r: (r.cost(prices), r.latency_s, r.config))
    return chosen


async def evaluate_paired(
    specs: Mapping[str, Mapping[str, Any]],
    tasks: Sequence[Task],
    cache: ResultCache,
    *,
    stamp: str,
    on_done: Callable[[], None] | None = None,
) -> dict[tuple[str, str], RunRecord]:
    """Fresh runs of two (or more) arms on ``tasks``, interleaved: one run at a time, task by
    task, the arms' order rotating from one task to the next.

    Why: on a shared machine the load drifts by the minute, so arms measured one after the
    other compare two different loads; interleaved and paired per task, each arm sees the
    same load on average and latency percentiles become comparable. The runs are written to
    the cache under keys carrying ``stamp`` (this benchmark run), so they are never reused.
    """
    labels = list(specs)
    workflows = {label: load_spec(spec) for label, spec in specs.items()}
    out: dict[tuple[str, str], RunRecord] = {}
    try:
        for i, t in enumerate(tasks):
            k = i % len(labels)
            for label in labels[k:] + labels[:k]:
                rec = await run_spec(workflows[label], specs[label], t)
                rec.config = label
                cache.put(f"{stamp}|{spec_digest(specs[label])}|{label}|{t.id}", rec)
                out[(label, t.id)] = rec
                if on_done:
                    on_done()
    finally:
        for wf in workflows.values():
            await wf.aclose()
    return out
