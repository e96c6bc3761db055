"""Candidates evaluated as val rollouts in the store, executed by runners.

Why through the store even in one process: the figures then come from the same spans that
production runs and external runners write (cost, tokens, latency, reward as stored), the
runs can be spread over ``lightspan runner serve`` processes on other machines
(``runners=0``), and Agent Lightning tools see the trainer's rollouts like their own.

Each candidate's resource set is stored under a content-hash id that is not the workflow's
namespace (it must never become the workflow's latest set); the store's global latest is put
back after writing. Rollout inputs are ``{"input": ..., "expected": ...}``, mode ``val``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightspan.engine import PriceTable, load_workflow
from lightspan.store.api.models import EnqueueRolloutRequest
from lightspan.trainer.data import Task
from lightspan.trainer.evaluation.evaluate import EvaluationError, Evaluator, Progress, Result
from lightspan.trainer.publishing.sidestate import write_aside
from lightspan.trainer.resmap import ResourcesMap, candidate_id, llm_steps
from lightspan.trainer.traces.spans import run_from_spans

FINISHED = {"succeeded", "failed", "cancelled", "timeout"}


class StoreEvaluator(Evaluator):
    """``runners`` in-process :class:`~lightspan.runner.WorkflowRunner` workers (0: rely on
    external runners serving this store)."""

    def __init__(
        self,
        workflow_path: str | Path,
        store: Any,
        *,
        prices: PriceTable | Mapping[str, Any] | None = None,
        runners: int = 2,
        llm_timeout_seconds: float = 120.0,
        poll_interval: float = 0.2,
        rollout_timeout: float | None = None,
    ) -> None:
        self.path = Path(workflow_path)
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.workflow = load_workflow(
            self.path, prices=self.prices, llm_timeout_seconds=llm_timeout_seconds
        )
        if self.workflow.evaluator is None:
            raise EvaluationError(
                f"workflow {self.workflow.name!r} ({self.path}) has no evaluator: the trainer "
                "needs one (`evaluator: module:function` in the workflow file) for rewards"
            )
        super().__init__(self.workflow.name, llm_steps(self.workflow))
        self.store = store
        self.runners = runners
        self.poll_interval = poll_interval
        self.rollout_timeout = rollout_timeout
        self._runner: Any = None
        self._serve: asyncio.Task[Any] | None = None
        self._registered: set[str] = set()

    async def start(self) -> None:
        if self.runners > 0:
            from lightspan.runner import WorkflowRunner

            self._runner = WorkflowRunner(
                self.workflow, self.store, workers=self.runners, poll_interval=self.poll_interval
            )
            self._serve = asyncio.create_task(self._runner.serve(), name="trainer-runners")

    async def aclose(self) -> None:
        if self._runner is not None and self._serve is not None:
            self._runner.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._serve, 30)
            if not self._serve.done():
                self._runner.request_stop(hard=True)
                with contextlib.suppress(BaseException):
                    await self._serve
        await self.workflow.aclose()

    async def register(self, resources: ResourcesMap) -> str:
        rid = candidate_id(self.workflow_name, resources)
        if rid not in self._registered:
            if await self.store.get_resources_by_id(rid) is None:
                await write_aside(self.store, rid, resources)
            self._registered.add(rid)
        return rid

    async def _run(
        self, resources: ResourcesMap, tasks: list[Task], progress: Progress | None
    ) -> list[Result]:
        if self._serve is not None and self._serve.done():
            exc = self._serve.exception() if not self._serve.cancelled() else None
            raise EvaluationError(f"the in-process runners stopped: {exc!r}")
        rid = await self.register(resources)
        from lightspan.store.api.models import RolloutConfig

        config = (
            RolloutConfig(timeout_seconds=self.rollout_timeout) if self.rollout_timeout else None
        )
        reqs = [
            EnqueueRolloutRequest(
                input={"input": t.input, "expected": t.expected},
                mode="val",
                resources_id=rid,
                config=config,
                metadata={"lightspan.trainer.task_id": t.id},
            )
            for t in tasks
        ]
        rollouts = await self.store.enqueue_many_rollouts(reqs)
        ids = [r.rollout_id for r in rollouts]
        pending = set(ids)
        finished: dict[str, Any] = {}
        last_progress = time.monotonic()
        try:
            while pending:
                self.check_interrupted()
                done = await self.store.wait_for_rollouts(
                    rollout_ids=sorted(pending), timeout=self.poll_interval
                )
                fresh = [r for r in done if r.status in FINISHED and r.rollout_id in pending]
                for r in fresh:
                    pending.discard(r.rollout_id)
                    finished[r.rollout_id] = r
                if fresh:
                    last_progress = time.monotonic()
                    if progress is not None:
                        progress(len(fresh))
                elif self.runners == 0 and time.monotonic() - last_progress > 600:
                    raise EvaluationError(
                        "no rollout finished in 10 minutes and no in-process runners: is a "
                        f"`lightspan runner serve` process serving workflow {self.workflow_name}?"
                    )
                if self._serve is not None and self._serve.done():
                    raise EvaluationError("the in-process runners stopped unexpectedly")
        except BaseException:
            # Ctrl-C or an error: leave no queued rollouts behind.
            for r in pending:
                with contextlib.suppress(Exception):
                    await self.store.update_rollout(r, status="cancelled")
            raise
        out = []
        for t, rollout_id in zip(tasks, ids, strict=True):
            spans = (await self.store.query_spans(rollout_id, "latest")).items
            run = run_from_spans(spans, task_id=t.id)
            if run is None:
                meta = getattr(getattr(finished[rollout_id], "attempt", None), "metadata", None)
                err = (meta or {}).get("error") or f"rollout {finished[rollout_id].status}"
                out.append(Result(task_id=t.id, reward=0.0, status="failed", error=str(err)))
            else:
                out.append(run.result)
        return out
