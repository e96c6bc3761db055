"""Scoring a resource set on tasks: the interface the search uses, and its in-process version.

Why an interface: the search only needs ``evaluate(resources, tasks) -> results``; whether
the runs happen in this process (tests, quick checks) or as val rollouts in the store executed
by runners (:mod:`lightspan.trainer.evaluation.store_eval`) is a deployment choice. Results are
cached per (resource-set digest, task id), and every run counts towards the trainer's own
spend. A set that differs from one already run only in ``max_tokens`` caps no call reached
takes that run instead of repeating it (:mod:`lightspan.trainer.evaluation.cap_reuse`).
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
from lightspan.trainer.evaluation.cap_reuse import CapView, cap_view, find_stand_in
from lightspan.trainer.resmap import LLMStep, ResourcesMap, candidate_id, digest, llm_steps

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
    reused: int = 0
    """(Set, task) results taken from a run of a set differing only in caps no call reached."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rollouts": self.rollouts,
            "reused_runs": self.reused,
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
    """Base: caching and spend accounting; subclasses implement :meth:`_run`.

    ``steps``: the workflow's LLM steps; with them, a (set, task) pair that a run of another
    set stands for (:mod:`lightspan.trainer.evaluation.cap_reuse`) is not run. Sets evaluated
    together coordinate: the first to start a task runs it, and the others of the same set but for
    their caps wait for that run before they decide whether to run their own."""

    def __init__(self, workflow_name: str, steps: list[LLMStep] | None = None) -> None:
        self.workflow_name = workflow_name
        self.steps = steps
        self.spend = Spend()
        self._cache: dict[tuple[str, str], Result] = {}
        self._runs: dict[str, tuple[CapView, dict[str, Result]]] = {}
        """Fresh runs by set digest, in the order sets were first run (the stand-in sources)."""
        self._inflight: dict[tuple[str, str], list[asyncio.Future[None]]] = {}
        """(set-but-caps, task id) -> runs of it under way."""
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
        self,
        resources: ResourcesMap,
        tasks: list[Task],
        *,
        progress: Progress | None = None,
        runs: Progress | None = None,
    ) -> list[Result]:
        """Results in task order; cached (resource set, task) pairs are not run again, nor
        pairs a run of another set stands for. ``progress`` counts every task settled (cached,
        stood in for or run); ``runs`` only the runs made."""
        self.check_interrupted()
        ticks = [f for f in (progress, runs) if f is not None]

        def tick_runs(n: int) -> None:
            for f in ticks:
                f(n)

        progress_of_runs = tick_runs if ticks else None
        key = digest(resources)
        todo = [t for t in tasks if (key, t.id) not in self._cache]
        view = cap_view(resources, self.steps) if todo and self.steps is not None else None
        lead: list[Task] = []
        waits: list[asyncio.Future[None]] = []
        followers: list[Task] = []
        for t in todo:
            if view is not None:
                if self._stand_in(key, view, t):
                    continue
                pending = self._inflight.get((view.rest, t.id))
                if pending:
                    waits.extend(pending)
                    followers.append(t)
                    continue
            lead.append(t)
        settled = len(tasks) - len(lead) - len(followers)  # cached or stood in for
        if progress is not None and settled:
            progress(settled)

        async def after_others() -> None:
            await asyncio.gather(*waits, return_exceptions=True)
            rest = [t for t in followers if view is None or not self._stand_in(key, view, t)]
            if progress is not None and len(rest) < len(followers):
                progress(len(followers) - len(rest))
            await self._run_fresh(resources, key, view, rest, progress_of_runs)

        # Marked before the first await, so that sets evaluated at the same time see the runs.
        lead_run = self._run_fresh(resources, key, view, lead, progress_of_runs)
        await asyncio.gather(lead_run, *([after_others()] if followers else []))
        return [self._cache[(key, t.id)] for t in tasks]

    def results_by_set(self) -> dict[str, dict[str, Result]]:
        """Every result settled so far, by resource-set digest, then task id (what a route
        to the baseline is fitted on: :mod:`lightspan.trainer.evaluation.route`)."""
        out: dict[str, dict[str, Result]] = {}
        for (key, task_id), result in self._cache.items():
            out.setdefault(key, {})[task_id] = result
        return out

    def _stand_in(self, key: str, view: CapView, task: Task) -> bool:
        run = find_stand_in(task.id, view, self._runs)
        if run is None:
            return False
        self._cache[(key, task.id)] = run
        self.spend.reused += 1
        return True

    def _run_fresh(
        self,
        resources: ResourcesMap,
        key: str,
        view: CapView | None,
        todo: list[Task],
        progress: Progress | None,
    ) -> asyncio.Future[None]:
        """Run ``todo`` (``repeats`` times each), cache and account the results; while they
        run, sets differing only in caps wait for them (``_inflight``). The runs are marked as
        under way when this is called (a task, not a coroutine: ``asyncio.gather`` would start
        a coroutine one loop turn later, after the other sets had looked), and the marks are
        cleared when the task ends, even cancelled before it started."""
        loop = asyncio.get_running_loop()
        marks = [] if view is None else [((view.rest, t.id), loop.create_future()) for t in todo]
        for where, fut in marks:
            self._inflight.setdefault(where, []).append(fut)

        async def run() -> None:
            if not todo:
                return
            k = max(1, self.repeats)
            runs = [t for t in todo for _ in range(k)]
            fresh = await self._run(resources, runs, progress)
            for r in fresh:
                self.spend.rollouts += 1
                self.spend.rollout_cost += r.cost
                self.spend.rollout_tokens += r.tokens
            for i, t in enumerate(todo):
                result = average(fresh[i * k : (i + 1) * k])
                self._cache[(key, t.id)] = result
                if view is not None:
                    self._runs.setdefault(key, (view, {}))[1][t.id] = result

        task = loop.create_task(run())

        def clear(_: object) -> None:
            for where, fut in marks:
                fut.set_result(None)
                self._inflight[where].remove(fut)
                if not self._inflight[where]:
                    del self._inflight[where]

        task.add_done_callback(clear)
        return task

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
        super().__init__(probe.name, llm_steps(probe))
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
