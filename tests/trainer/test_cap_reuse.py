"""A run stands for a resource set that differs only in caps none of its calls reached."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest

from lightspan.trainer.data import Task, load_tasks
from lightspan.trainer.evaluation.cap_reuse import cap_view, find_stand_in, stands_for
from lightspan.trainer.evaluation.evaluate import CallRecord, Evaluator, InProcessEvaluator, Result
from lightspan.trainer.resmap import LLMStep, ResourcesMap, with_step_resource
from tests.trainer.conftest import PRICES, ArithLLM, write_tasks, write_workflow

STEPS = [LLMStep("plan", "p_plan", "llm"), LLMStep("solve", "p_solve", "llm")]
BASE: ResourcesMap = {
    "llm": {
        "resource_type": "llm",
        "endpoint": "http://127.0.0.1:1/v1",
        "model": "big",
        "sampling_parameters": {"max_tokens": 256, "temperature": 0.0},
    },
    "p_plan": {"resource_type": "prompt_template", "template": "plan {q}"},
    "p_solve": {"resource_type": "prompt_template", "template": "solve {q}"},
    "other": {"resource_type": "custom", "x": 1},
}


def _set(step: str, **llm_changes: object) -> ResourcesMap:
    llm = copy.deepcopy(BASE["llm"])
    cap = llm_changes.pop("max_tokens", llm["sampling_parameters"]["max_tokens"])
    llm.update(llm_changes)
    if cap is None:
        llm["sampling_parameters"].pop("max_tokens")
    else:
        llm["sampling_parameters"]["max_tokens"] = cap
    return with_step_resource(BASE, "llm", step, llm)


def _run(plan_out: int, solve_out: int = 5, *, finish: str = "stop", ok: bool = True) -> Result:
    return Result(
        "t1",
        1.0,
        "succeeded" if ok else "failed",
        cost=2.0,
        latency_s=3.0,
        calls=[
            CallRecord("plan", "big", 10, plan_out, max_tokens=256, finish_reason=finish),
            CallRecord("solve", "big", 10, solve_out, max_tokens=256),
        ],
    )


def test_a_run_below_both_caps_stands_for_the_other_cap_either_way() -> None:
    base, cut = cap_view(BASE, STEPS), cap_view(_set("plan", max_tokens=46), STEPS)
    assert stands_for(_run(30), base, cut)
    assert stands_for(_run(30), cut, base)
    assert stands_for(_run(30), base, cap_view(_set("plan", max_tokens=None), STEPS))


def test_a_run_that_reached_the_lower_cap_stands_for_neither() -> None:
    base, cut = cap_view(BASE, STEPS), cap_view(_set("plan", max_tokens=46), STEPS)
    assert not stands_for(_run(46), base, cut)  # would have stopped at 46 with "length"
    assert not stands_for(_run(46, finish="length"), cut, base)  # cut: longer text unknown
    assert not stands_for(_run(120), base, cut)


def test_only_caps_may_differ_and_only_runs_with_known_usage_stand_in() -> None:
    base = cap_view(BASE, STEPS)
    assert not stands_for(_run(30), base, cap_view(_set("plan", model="small"), STEPS))
    assert not stands_for(_run(30), base, cap_view(_set("plan", temperature=0.7), STEPS))
    prompt = with_step_resource(
        BASE, "p_plan", "plan", {"resource_type": "prompt_template", "template": "plan! {q}"}
    )
    assert not stands_for(_run(30), base, cap_view(prompt, STEPS))
    other = {**BASE, "other": {"resource_type": "custom", "x": 2}}
    assert not stands_for(_run(30), base, cap_view(other, STEPS))
    cut = cap_view(_set("plan", max_tokens=46), STEPS)
    assert not stands_for(_run(30, ok=False), base, cut)
    assert not stands_for(_run(0), base, cut)  # no usage recorded: length unknown


def test_a_cap_on_one_step_looks_only_at_that_steps_calls() -> None:
    base, cut = cap_view(BASE, STEPS), cap_view(_set("solve", max_tokens=8), STEPS)
    assert stands_for(_run(200, solve_out=5), base, cut)
    assert not stands_for(_run(20, solve_out=8), base, cut)


def test_the_stand_in_is_the_first_run_made_and_records_its_own_cap() -> None:
    first, second = _run(30), _run(31)
    second.reward = 0.0
    base = cap_view(BASE, STEPS)
    wide = cap_view(_set("plan", max_tokens=512), STEPS)
    cached = {"a": (base, {"t1": first}), "b": (wide, {"t1": second})}
    target = cap_view(_set("plan", max_tokens=46), STEPS)
    got = find_stand_in("t1", target, cached)
    assert got is not None and got.reward == 1.0
    assert [c.max_tokens for c in got.calls] == [46, 256]
    assert first.calls[0].max_tokens == 256  # the source is left as it was
    assert find_stand_in("t2", target, cached) is None


async def test_caps_evaluated_together_run_only_what_no_other_run_stands_for(
    arith_llm: ArithLLM, tmp_path: Path
) -> None:
    """Model ``big`` writes 24 words: a cap of 30 changes none of them, a cap of 10 cuts them.
    Scored at once (as a halving rung scores them), the 30 runs wait for the 64 runs and take
    them; the 10 runs are made."""
    ev = InProcessEvaluator(write_workflow(tmp_path, arith_llm.base_url), prices=PRICES)
    tasks: list[Task] = load_tasks(write_tasks(tmp_path, 6))
    base = (await ev.load().resources.get_resources()).to_dict()
    sets = []
    for cap in (64, 30, 10):
        llm = copy.deepcopy(base["default"])
        llm["sampling_parameters"]["max_tokens"] = cap
        sets.append(with_step_resource(base, "default", "solve", llm))
    at64, at30, at10 = await asyncio.gather(*(ev.evaluate(s, tasks) for s in sets))
    assert len(arith_llm.requests) == 12
    assert ev.spend.rollouts == 12 and ev.spend.reused == 6
    assert [r.reward for r in at30] == [r.reward for r in at64]
    assert [r.cost for r in at30] == [r.cost for r in at64]
    assert {c.max_tokens for r in at30 for c in r.calls} == {30}
    assert {c.finish_reason for r in at10 for c in r.calls} == {"length"}
    assert {c.output_tokens for r in at10 for c in r.calls} == {10}
    # Later, one at a time: a cap above every output takes the cached runs, a cut one runs.
    llm = copy.deepcopy(base["default"])
    llm["sampling_parameters"]["max_tokens"] = 25
    await ev.evaluate(with_step_resource(base, "default", "solve", llm), tasks)
    llm["sampling_parameters"]["max_tokens"] = 24
    await ev.evaluate(with_step_resource(base, "default", "solve", llm), tasks)
    assert len(arith_llm.requests) == 18 and ev.spend.reused == 12


class _Stuck(Evaluator):
    """Runs that never finish (until cancelled)."""

    def __init__(self) -> None:
        super().__init__("stuck", STEPS)

    async def _run(self, resources, tasks, progress):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_cancelled_evaluation_leaves_no_run_marked_as_under_way() -> None:
    """Else a set equal but for its caps, evaluated later, would wait for it forever."""
    ev = _Stuck()
    tasks = [Task("t1", {}, None), Task("t2", {}, None)]
    for turns in (0, 3):  # cancelled before its runs started, and while they run
        first = asyncio.create_task(ev.evaluate(BASE, tasks))
        for _ in range(turns + 1):
            await asyncio.sleep(0)
        assert ev._inflight, "the runs are marked as under way"
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert ev._inflight == {}
