"""Repeated runs per (resource set, task): the evaluator averages them into one result."""

from __future__ import annotations

import itertools

from lightspan.trainer.data import Task
from lightspan.trainer.evaluation.evaluate import CallRecord, Evaluator, Result


class _Flaky(Evaluator):
    """Answers right every other run (a model server whose answers vary between runs)."""

    def __init__(self) -> None:
        super().__init__("flaky")
        self._n = itertools.count()
        self.seen: list[str] = []

    async def _run(self, resources, tasks, progress):  # type: ignore[no-untyped-def]
        out = []
        for t in tasks:
            i = next(self._n)
            self.seen.append(t.id)
            out.append(
                Result(
                    task_id=t.id,
                    reward=float(i % 2),
                    status="succeeded",
                    cost=1.0 + i % 2,
                    latency_s=2.0,
                    input_tokens=10,
                    output_tokens=4 + 2 * (i % 2),
                    calls=[CallRecord("solve", "m", 10, 4 + 2 * (i % 2))],
                )
            )
        return out


async def test_repeats_average_each_task_and_count_every_run() -> None:
    ev = _Flaky()
    ev.repeats = 2
    tasks = [Task("a", {}, 1), Task("b", {}, 1)]
    res = await ev.evaluate({"x": {}}, tasks)
    assert ev.seen == ["a", "a", "b", "b"]
    assert [r.task_id for r in res] == ["a", "b"]
    assert [r.reward for r in res] == [0.5, 0.5]
    assert res[0].cost == 1.5 and res[0].output_tokens == 5 and len(res[0].calls) == 2
    assert ev.spend.rollouts == 4 and ev.spend.rollout_cost == 6.0
    # Cached: asking again runs nothing.
    assert await ev.evaluate({"x": {}}, tasks) == res and ev.spend.rollouts == 4


async def test_one_repeat_keeps_the_single_run() -> None:
    ev = _Flaky()
    res = await ev.evaluate({"x": {}}, [Task("a", {}, 1), Task("b", {}, 1)])
    assert [r.reward for r in res] == [0.0, 1.0] and ev.spend.rollouts == 2
