"""Scoring a resource set on tasks: the interface the search uses, and its in-process version.

Why an interface: the search only needs ``evaluate(resources, tasks) -> results``; whether
the runs happen in this process (tests, quick checks) or as val rollouts in the store executed
by runners (:mod:`lightspan.trainer.store_eval`) is a deployment choice. Results are cached
per (resource-set digest, task id), and every run counts towards the trainer's own spend.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightspan.engine import (
    BaseListener,
    LLMCallInfo,
    PriceTable,
    ResourceSet,
    StaticResources,
    Workflow,
    add_listener,
    load_workflow,
    remove_listener,
)
from lightspan.trainer.data import Task
from lightspan.trainer.resmap import ResourcesMap, candidate_id, digest

Progress = Callable[[int], None]
"""Called with the number of runs just finished (for progress bars)."""


@dataclass(slots=True)
class CallRecord:
    """One LLM call of a run, as the search and APO's critic need it."""

    step: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    finish_reason: str | None = None
    ok: bool = True
    max_tokens: int | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    completion: str | None = None


@dataclass(slots=True)
class Result:
    """One (resource set, task) run."""

    task_id: str
    reward: float
    status: str
    cost: float = 0.0
    latency_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    calls: list[CallRecord] = field(default_factory=list)
    output: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Spend:
    """What the trainer itself spent: rollouts run and their LLM cost, plus optimizer calls."""

    rollouts: int = 0
    rollout_cost: float = 0.0
    rollout_tokens: int = 0
    optimizer_calls: int = 0
    optimizer_tokens: int = 0
    optimizer_cost: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rollouts": self.rollouts,
            "rollout_cost": self.rollout_cost,
            "rollout_tokens": self.rollout_tokens,
            "optimizer_calls": self.optimizer_calls,
            "optimizer_tokens": self.optimizer_tokens,
            "optimizer_cost": self.optimizer_cost,
            "total_cost": self.rollout_cost + self.optimizer_cost,
        }


def average(results: list[Result]) -> Result:
    """One task's repeated runs as one result: mean reward, cost, latency and tokens; every
    run's calls (for output-length statistics); failed if any run failed (its error kept)."""
    if len(results) == 1:
        return results[0]
    n = len(results)
    failed = next((r for r in results if not r.ok), None)
    return Result(
        task_id=results[0].task_id,
        reward=sum(r.reward for r in results) / n,
        status=failed.status if failed else results[0].status,
        cost=sum(r.cost for r in results) / n,
        latency_s=sum(r.latency_s for r in results) / n,
        input_tokens=round(sum(r.input_tokens for r in results) / n),
        output_tokens=round(sum(r.output_tokens for r in results) / n),
        calls=[c for r in results for c in r.calls],
        output=results[0].output,
        error=failed.error if failed else None,
    )


class EvaluationError(RuntimeError):
    """Candidates could not be evaluated at all (no evaluator, store unreachable...)."""


class Evaluator:
    """Base: caching and spend accounting; subclasses implement :meth:`_run`."""

    def __init__(self, workflow_name: str) -> None:
        self.workflow_name = workflow_name
        self.spend = Spend()
        self._cache: dict[tuple[str, str], Result] = {}
        self.repeats = 1
        """Runs per (resource set, task), averaged into one result: where the model server's
        answers vary between runs (llama.cpp batches concurrent requests, and its numerics
        depend on the batch), one sample per task makes a candidate's reward a coin toss."""
        self.interrupted = False
        """Set by a Ctrl-C handler: no new work starts (cancellation alone can be swallowed
        by a library racing a timeout; this flag cannot)."""

    def check_interrupted(self) -> None:
        if self.interrupted:
            raise asyncio.CancelledError("interrupted")

    async def evaluate(
        self, resources: ResourcesMap, tasks: list[Task], *, progress: Progress | None = None
    ) -> list[Result]:
        """Results in task order; cached (resource set, task) pairs are not run again."""
        self.check_interrupted()
        key = digest(resources)
        todo = [t for t in tasks if (key, t.id) not in self._cache]
        if progress is not None and len(todo) < len(tasks):
            progress(len(tasks) - len(todo))
        if todo:
            k = max(1, self.repeats)
            runs = [t for t in todo for _ in range(k)]
            fresh = await self._run(resources, runs, progress)
            for r in fresh:
                self.spend.rollouts += 1
                self.spend.rollout_cost += r.cost
                self.spend.rollout_tokens += r.tokens
            for i, t in enumerate(todo):
                self._cache[(key, t.id)] = average(fresh[i * k : (i + 1) * k])
        return [self._cache[(key, t.id)] for t in tasks]

    async def _run(
        self, resources: ResourcesMap, tasks: list[Task], progress: Progress | None
    ) -> list[Result]:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


class _CallCollector(BaseListener):
    """Collects LLM calls of runs tagged with a trainer key (finish reasons, messages)."""

    def __init__(self) -> None:
        self.calls: dict[str, list[CallRecord]] = {}

    def on_llm_end(self, call: LLMCallInfo) -> None:
        key = call.run.metadata.get("lightspan.trainer.key")
        if key is None:
            return
        self.calls.setdefault(key, []).append(
            CallRecord(
                step=call.step.name if call.step is not None else "?",
                model=call.request_model,
                input_tokens=call.input_tokens,
                output_tokens=call.output_tokens,
                cost=call.cost,
                latency_s=(call.end_time or call.start_time) - call.start_time,
                finish_reason=call.finish_reasons[0] if call.finish_reasons else None,
                ok=call.status == "ok",
                max_tokens=call.max_tokens,
                messages=list(call.messages),
                completion=call.completion,
            )
        )


class InProcessEvaluator(Evaluator):
    """Runs the workflow file in this process, ``concurrency`` runs at a time.

    The engine resolves per-step keys (``<name>@<step>``) itself; a fresh workflow object per
    resource set keeps concurrent candidates apart.
    """

    _keys = itertools.count()

    def __init__(
        self,
        workflow_path: str | Path,
        *,
        prices: PriceTable | Mapping[str, Any] | None = None,
        concurrency: int = 4,
        llm_timeout_seconds: float = 120.0,
    ) -> None:
        self.path = Path(workflow_path)
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.timeout = llm_timeout_seconds
        probe = self.load()
        if probe.evaluator is None:
            raise EvaluationError(
                f"workflow {probe.name!r} ({self.path}) has no evaluator: the trainer needs "
                "one (`evaluator: module:function` in the workflow file) to compute rewards"
            )
        super().__init__(probe.name)
        self.concurrency = max(1, concurrency)

    def load(self) -> Workflow:
        return load_workflow(self.path, prices=self.prices, llm_timeout_seconds=self.timeout)

    def _slots(self) -> asyncio.Semaphore:
        """One bound for every evaluation in flight (candidates may be scored together)."""
        loop = asyncio.get_running_loop()
        held = getattr(self, "_sem", None)
        if held is None or held[0] is not loop:  # a semaphore belongs to one event loop
            held = self._sem = (loop, asyncio.Semaphore(self.concurrency))
        return held[1]

    async def _run(
        self, resources: ResourcesMap, tasks: list[Task], progress: Progress | None
    ) -> list[Result]:
        wf = self.load()
        rid = candidate_id(wf.name, resources)
        wf.resources = StaticResources(ResourceSet.from_dict(rid, resources))
        collector = _CallCollector()
        sem = self._slots()

        async def one(task: Task) -> Result:
            key = f"k{next(self._keys)}"
            async with sem:
                self.check_interrupted()
                r = await wf.run(
                    task.input,
                    expected=task.expected,
                    mode="val",
                    metadata={"lightspan.trainer.key": key},
                )
            calls = collector.calls.pop(key, [])
            if progress is not None:
                progress(1)
            return Result(
                task_id=task.id,
                reward=float(r.reward or 0.0),
                status=r.status,
                cost=r.cost,
                latency_s=r.duration_s,
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                calls=calls,
                output=r.output,
                error=repr(r.error) if r.error else None,
            )

        add_listener(collector)
        try:
            return list(await asyncio.gather(*(one(t) for t in tasks)))
        finally:
            remove_listener(collector)
            await wf.aclose()
