"""The fallbacks of a winner: the sets the cost search accepted on its way to it, latest
first, tested beside the winner on the test split (Bonferroni); the first that holds is
published.

The scripted workflow replays seed 1 of classification x sequence (docs/performance.md 1c'):
a concise ``plan`` prompt on the same model saves most of the cost and loses nothing; moving
``format`` to a smaller model saves a little more, holds on val and train, and loses one test
task, so the test gate refused the whole winner and the baseline was kept.
"""

from __future__ import annotations

import copy
import json

import pytest

from lightspan.engine import Workflow, llm_task, sequence
from lightspan.trainer.data import Task, split_tasks
from lightspan.trainer.evaluation.evaluate import Evaluator, Result
from lightspan.trainer.resmap import LLMStep, step_resource
from lightspan.trainer.run import TrainOptions, _gate, train
from lightspan.trainer.search.cost import CONCISE_SUFFIX, CostSearch, ModelOption
from tests.trainer.plan_format import BASE, URL, train_plan_format

STEPS = [LLMStep(name="plan", prompt="p", llm="llm"), LLMStep(name="format", prompt="p", llm="llm")]


class _PlanThenFormat(Evaluator):
    """``plan`` costs 10 on ``big``, 3 with the concise prompt (answers unchanged); ``format``
    costs 2 on ``big`` with either prompt and 1 on ``mini``, which is wrong on ``hard`` tasks."""

    def __init__(self, hard: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__("plan-format")
        self.hard = hard

    async def _run(self, resources, tasks, progress):  # type: ignore[no-untyped-def]
        concise = step_resource(resources, "p", "plan")["template"].endswith(CONCISE_SUFFIX)
        plan = step_resource(resources, "llm", "plan")["model"]
        fmt = step_resource(resources, "llm", "format")["model"]
        out = []
        for t in tasks:
            wrong = plan != "big" or (fmt == "mini" and t.id in self.hard)
            cost = (3.0 if concise else 10.0) + (1.0 if fmt == "mini" else 2.0)
            out.append(Result(t.id, 0.0 if wrong else 1.0, "succeeded", cost=cost, latency_s=1.0))
        return out


def _tasks(n: int) -> list[Task]:
    return [Task(f"t{i}", {"x": i}, i) for i in range(n)]


def _search(ev: Evaluator, **kw) -> CostSearch:  # type: ignore[no-untyped-def]
    return CostSearch(
        ev, STEPS, catalog=[ModelOption(URL, "mini")], price=lambda m: None, min_tasks=4, **kw
    )


async def test_the_search_names_the_sets_it_accepted_before_its_winner_as_fallbacks():
    tasks = _tasks(24)
    out = await _search(_PlanThenFormat(), keep_model_first=True).run(
        BASE, tasks[:12], [], train=tasks[12:]
    )
    assert step_resource(out.best, "llm", "format")["model"] == "mini"
    assert step_resource(out.best, "p", "plan")["template"].endswith(CONCISE_SUFFIX)
    ((label, fb),) = out.fallbacks
    assert label.startswith("plan: ") and "prompt=concise" in label
    assert [step_resource(fb, "llm", s.name)["model"] for s in STEPS] == ["big", "big"]
    assert step_resource(fb, "p", "plan")["template"].endswith(CONCISE_SUFFIX)
    assert not step_resource(fb, "p", "format")["template"].endswith(CONCISE_SUFFIX)


async def test_no_fallback_when_the_search_accepted_one_change():
    tasks = _tasks(24)
    # mini loses every task: format keeps big, the concise plan is the only change.
    plan_only = await _search(_PlanThenFormat(hard={t.id for t in tasks})).run(
        BASE, tasks[:12], [], train=tasks[12:]
    )
    assert step_resource(plan_only.best, "llm", "format")["model"] == "big"
    assert plan_only.fallbacks == []
    # Without prompt variants the swap is the only accepted change.
    no_prompts = await _search(_PlanThenFormat(), prompt_variants=False).run(
        BASE, tasks[:12], [], train=tasks[12:]
    )
    assert step_resource(no_prompts.best, "llm", "format")["model"] == "mini"
    assert no_prompts.fallbacks == []


def _runs(rewards: list[int], cost: float) -> list[Result]:
    return [
        Result(f"t{i}", r, "succeeded", cost=cost, latency_s=1.0) for i, r in enumerate(rewards)
    ]


def test_the_gate_takes_the_fallback_only_when_the_winner_is_refused():
    base = _runs([1] * 11, 10.0)
    loses_one = _runs([0] + [1] * 10, 3.0)
    keeps_all = _runs([1] * 11, 4.0)
    which, why, lb = _gate(
        base, [("the winner", loses_one), ("its fallback", keeps_all)], TrainOptions()
    )
    assert which == 1 and lb == 0.0
    assert "the winner scored lower on 1 and higher on 0 of 11 test tasks" in why
    assert "its fallback: held on test: cheaper" in why
    which, why, _ = _gate(
        base, [("the winner", keeps_all), ("its fallback", loses_one)], TrainOptions()
    )
    assert which == 0 and "fallback" not in why
    which, why, _ = _gate(
        base, [("the winner", loses_one), ("its fallback", loses_one)], TrainOptions()
    )
    assert which is None and "its fallback scored lower on 1" in why


def test_two_sets_tried_are_each_tested_at_half_the_error_rate():
    # Gains on 4 tasks and a loss on 1 of 16: the bound is 0 at 95 % and -1/16 at 97.5 %, so
    # the same runs pass alone and fail when a second set is tested beside them.
    base = _runs([1] + [0] * 4 + [1] * 11, 10.0)
    opt = _runs([0] + [1] * 4 + [1] * 11, 3.0)
    alone = _gate(base, [("the winner", opt)], TrainOptions())
    two = _gate(base, [("the winner", opt), ("its fallback", base)], TrainOptions())
    assert alone[0] == 0 and alone[2] == 0.0
    assert two[0] is None and two[2] == pytest.approx(-1 / 16)


@pytest.mark.parametrize("winner_loses_on_test", [True, False])
async def test_train_publishes_the_fallback_when_the_winner_loses_a_test_task(
    tmp_path, winner_loses_on_test
):
    tasks = _tasks(36)
    split = split_tasks(tasks, seed=0)
    hard = {split.test[0].id} if winner_loses_on_test else set()
    rep, published = await train_plan_format(tmp_path, _PlanThenFormat(hard), tasks)
    assert rep["held_on_test"] is True and published == [rep["resources"]]
    fmt = step_resource(rep["resources"], "llm", "format")["model"]
    (fallback,) = rep["fallbacks"]
    assert fallback["chosen"] is winner_loses_on_test
    assert fmt == ("big" if winner_loses_on_test else "mini")
    assert rep["winner"]["cost_per_run"] == 4.0 and fallback["summary"]["cost_per_run"] == 5.0
    assert rep["optimized"]["cost_per_run"] == (5.0 if winner_loses_on_test else 4.0)
    rewards = rep["test_rewards"]
    assert rewards["task"] == [t.id for t in split.test] and rewards["baseline"] == [1.0] * 11
    assert rewards["fallback 1"] == [1.0] * 11
    assert rewards["winner"] == [0.0 if t.id in hard else 1.0 for t in split.test]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["fallbacks"][0]["chosen"] is winner_loses_on_test
    md = (tmp_path / "report.md").read_text()
    assert "| figure (test split) | winner | fallback 1 |" in md
    assert ("fallback 1 was chosen" in md) is winner_loses_on_test


class _ThreeChanges(Evaluator):
    """``plan`` and ``solve`` on ``big``: the concise prompt saves 7 on plan (answers unchanged)
    and 3 on solve, where it is wrong on ``hard_solve`` tasks; ``format`` on ``mini`` saves 1
    and is wrong on ``hard_format`` tasks."""

    def __init__(self, hard_solve: set[str], hard_format: set[str]) -> None:
        super().__init__("three-changes")
        self.hard_solve, self.hard_format = hard_solve, hard_format

    async def _run(self, resources, tasks, progress):  # type: ignore[no-untyped-def]
        def concise(step: str) -> bool:
            return step_resource(resources, "p", step)["template"].endswith(CONCISE_SUFFIX)

        models = [step_resource(resources, "llm", s)["model"] for s in ("plan", "solve", "format")]
        out = []
        for t in tasks:
            wrong = models[0] != "big" or models[1] != "big"
            wrong |= concise("solve") and t.id in self.hard_solve
            wrong |= models[2] == "mini" and t.id in self.hard_format
            cost = (3.0 if concise("plan") else 10.0) + (2.0 if concise("solve") else 5.0)
            cost += 1.0 if models[2] == "mini" else 2.0
            out.append(Result(t.id, 0.0 if wrong else 1.0, "succeeded", cost=cost, latency_s=1.0))
        return out


async def _train_three(tmp_path, ev: Evaluator, **options):  # type: ignore[no-untyped-def]
    """``train`` on plan -> solve -> format, every step on ``big``, ``mini`` in the catalog."""
    wf = Workflow(
        "plan-solve-format",
        sequence(
            "s",
            llm_task("plan", prompt="p", llm="llm"),
            llm_task("solve", prompt="p", llm="llm"),
            llm_task("format", prompt="p", llm="llm"),
        ),
    )
    return await train(
        evaluator=ev,
        workflow=wf,
        baseline=BASE,
        tasks=_tasks(36),
        catalog=[ModelOption(URL, "mini")],
        price=lambda m: None,
        options=TrainOptions(keep_model_first=True, min_tasks=4, **options),
        out=tmp_path,
        optimizer=object(),
    )


async def test_train_publishes_the_latest_earlier_set_that_holds_on_test(tmp_path):
    # Test task 0 is lost by the concise solve, task 1 by format on mini: the winner (all three
    # changes) loses two, fallback 1 (plan + solve concise) one, fallback 2 (plan concise) none.
    split = split_tasks(_tasks(36), seed=0)
    rep = await _train_three(tmp_path, _ThreeChanges({split.test[0].id}, {split.test[1].id}))
    assert [f["chosen"] for f in rep["fallbacks"]] == [False, True]
    assert [f["label"].split(":")[0] for f in rep["fallbacks"]] == ["solve", "plan"]
    assert rep["held_on_test"] is True
    assert step_resource(rep["resources"], "p", "plan")["template"].endswith(CONCISE_SUFFIX)
    assert not step_resource(rep["resources"], "p", "solve")["template"].endswith(CONCISE_SUFFIX)
    assert step_resource(rep["resources"], "llm", "format")["model"] == "big"
    assert rep["optimized"]["cost_per_run"] == 10.0 and rep["winner"]["cost_per_run"] == 6.0
    lost = {k: v.count(0.0) for k, v in rep["test_rewards"].items() if k != "task"}
    assert lost == {"baseline": 0, "winner": 2, "fallback 1": 1, "fallback 2": 0}
    assert "fallback 2 (accepted up to plan: " in rep["decision"]
    assert "fallback 2 was chosen" in (tmp_path / "report.md").read_text()


async def test_with_both_algorithms_apos_prompts_are_the_last_fallback(tmp_path, monkeypatch):
    # apo's result (here: a concise solve prompt) is a set accepted before the cost search's
    # changes: when those lose test tasks, apo's prompts alone are tried last.
    from lightspan.trainer.search import apo

    async def concise_solve(self, seed, train_tasks, val_tasks):  # type: ignore[no-untyped-def]
        out = copy.deepcopy(seed)
        out["p@solve"] = {**step_resource(seed, "p", "solve")}
        out["p@solve"]["template"] += CONCISE_SUFFIX
        self.outcome.best = out
        return self.outcome

    monkeypatch.setattr(apo.APOSearch, "run", concise_solve)
    split = split_tasks(_tasks(36), seed=0)
    # Test task 0 is lost by format on mini: the winner (apo's solve, then the concise plan and
    # format on mini) loses it, fallback 1 (apo's solve and the concise plan) holds.
    rep = await _train_three(tmp_path, _ThreeChanges(set(), {split.test[0].id}), algorithm="both")
    assert [f["label"].split(":")[0] for f in rep["fallbacks"]] == ["plan", "apo"]
    assert [f["chosen"] for f in rep["fallbacks"]] == [True, False]
    assert step_resource(rep["resources"], "llm", "format")["model"] == "big"
