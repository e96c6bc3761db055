"""Routing long inputs to the baseline: the threshold fitted on the search's train and val
runs, the routed winner tested as the first fallback with runs composed from the winner's and
the baseline's, and published as ``<key>|input>N`` variants the engine applies."""

from __future__ import annotations

import pytest

from lightspan.engine import ResourceSet
from lightspan.trainer.data import Task, split_tasks
from lightspan.trainer.evaluation.evaluate import Evaluator, Result
from lightspan.trainer.evaluation.route import (
    Route,
    compose,
    fit_route,
    routed_resources,
)
from lightspan.trainer.resmap import step_resource
from lightspan.trainer.search.cost import CONCISE_SUFFIX
from tests.trainer.plan_format import BASE, train_plan_format


def _task(i: int, chars: int) -> Task:
    return Task(f"t{i}", {"x": "y" * chars}, i)


def _results(rewards: dict[str, float]) -> dict[str, Result]:
    return {i: Result(i, r, "succeeded") for i, r in rewards.items()}


TASKS = [_task(0, 20), _task(1, 40), _task(2, 60), _task(3, 80), _task(4, 100), _task(5, 30)]
ALL_RIGHT = {t.id: 1.0 for t in TASKS}


def test_the_route_keeps_inputs_longer_than_every_input_shorter_than_a_loss_on_the_baseline():
    others = {
        "a": _results({**ALL_RIGHT, "t3": 0.0}),
        "b": _results({**ALL_RIGHT, "t2": 0.0}),
        "c": _results(ALL_RIGHT),
    }
    route, why = fit_route(_results(ALL_RIGHT), others, TASKS)
    # Lost at 60 and 80 characters; the longest input shorter than 60 has 40: 41-59 is
    # ground no run vouches for, so it goes to the baseline too.
    assert route is not None and route.max_chars == 40
    assert [d["task"] for d in route.lost] == ["t2", "t3"]
    assert route.routed_share == pytest.approx(3 / 6) and route.sets_counted == 3
    assert why == (
        "inputs over 40 characters on the baseline (50% of train and val): the shortest of "
        "2 input(s) a cheaper set lost has 60, the longest shorter one 40"
    )


def test_a_set_that_lost_more_than_a_quarter_is_not_evidence():
    broad = _results({**{t.id: 0.0 for t in TASKS}, "t4": 1.0})  # loses the short ones too
    near = _results({**ALL_RIGHT, "t4": 0.0})
    route, _ = fit_route(_results(ALL_RIGHT), {"broad": broad, "near": near}, TASKS)
    assert route is not None and route.max_chars == 80 and route.sets_left_out == 1
    none, why = fit_route(_results(ALL_RIGHT), {"broad": broad}, TASKS)
    assert none is None
    assert why == (
        "no set the search ran lost a train or val task the baseline solved "
        "(besides 1 that lost more than 25% of them)"
    )


def test_no_route_when_a_set_lost_the_shortest_input():
    route, why = fit_route(_results(ALL_RIGHT), {"a": _results({**ALL_RIGHT, "t0": 0.0})}, TASKS)
    assert route is None and "would send every input to the baseline" in why


def test_a_task_the_baseline_also_lost_is_no_evidence():
    base = _results({**ALL_RIGHT, "t1": 0.0})
    route, _ = fit_route(base, {"a": _results({**ALL_RIGHT, "t1": 0.0})}, TASKS)
    assert route is None


def test_the_routed_set_keeps_the_baselines_resource_for_every_key_the_winner_changed():
    winner = {
        **BASE,
        "llm@format": {**BASE["llm"], "model": "mini"},
        "p@plan": {**BASE["p"], "template": "Q {x}" + CONCISE_SUFFIX},
        "p@solve": dict(BASE["p"]),  # unchanged: no variant
    }
    routed = routed_resources(winner, BASE, Route(max_chars=59))
    assert sorted(k for k in routed if "|input>" in k) == ["llm@format|input>59", "p@plan|input>59"]
    assert routed["llm@format|input>59"] == BASE["llm"] and routed["p@plan|input>59"] == BASE["p"]
    rs = ResourceSet.from_dict("r", routed)
    assert rs.for_input({"x": "y" * 59}).llm("llm", "format").model == "mini"
    long = rs.for_input({"x": "y" * 60})
    assert long.llm("llm", "format").model == "big"
    assert long.prompt("p", "plan").template == "Q {x}"


def test_composed_runs_take_the_baselines_on_long_inputs():
    tasks = TASKS[:3]
    w = [Result(t.id, 0.5, "succeeded", cost=1.0) for t in tasks]
    b = [Result(t.id, 1.0, "succeeded", cost=9.0) for t in tasks]
    assert compose(w, b, tasks, Route(max_chars=39)) == [w[0], b[1], b[2]]


class _LongInputsHard(Evaluator):
    """plan -> format on ``big``. The concise plan prompt saves 7, answers unchanged; format on
    ``mini`` saves 1 and is wrong on the ``hard`` tasks; the concise format prompt on ``big``
    saves 0.5 and is wrong on every long input (> 50 characters): the evidence a route is
    fitted on. ``mini`` on plan is wrong everywhere."""

    def __init__(self, hard: set[str]) -> None:
        super().__init__("plan-format")
        self.hard = hard

    async def _run(self, resources, tasks, progress):  # type: ignore[no-untyped-def]
        def concise(step: str) -> bool:
            return step_resource(resources, "p", step)["template"].endswith(CONCISE_SUFFIX)

        plan = step_resource(resources, "llm", "plan")["model"]
        fmt = step_resource(resources, "llm", "format")["model"]
        out = []
        for t in tasks:
            long = len(t.input["x"]) > 50
            wrong = plan != "big" or (fmt == "mini" and t.id in self.hard)
            wrong |= fmt == "big" and concise("format") and long
            cost = (3.0 if concise("plan") else 10.0) + (1.0 if fmt == "mini" else 2.0)
            cost -= 0.5 if fmt == "big" and concise("format") else 0.0
            out.append(Result(t.id, 0.0 if wrong else 1.0, "succeeded", cost=cost, latency_s=1.0))
        return out


def _long_tasks() -> list[Task]:
    """36 tasks, one in six with a 60-character input, the others 5-25 characters."""
    return [_task(i, 60 if i % 6 == 0 else 5 + i % 21) for i in range(36)]


async def _train(tmp_path, hard: set[str], **options):  # type: ignore[no-untyped-def]
    return await train_plan_format(tmp_path, _LongInputsHard(hard), _long_tasks(), **options)


async def test_train_publishes_the_routed_winner_when_the_winner_loses_a_long_test_input(
    tmp_path,
):
    split = split_tasks(_long_tasks(), seed=0)
    long_test = [t for t in split.test if len(t.input["x"]) > 50]
    assert long_test, "the split must put a long input in test"
    rep, published = await _train(tmp_path, {long_test[0].id})
    assert rep["route"]["max_chars"] == 25
    assert rep["route"]["lost"] and all(d["chars"] == 60 for d in rep["route"]["lost"])
    routed, accepted = rep["fallbacks"]
    assert routed["kind"] == "routed" and routed["chosen"] is True
    assert routed["label"] == "the winner, inputs over 25 characters on the baseline"
    assert accepted["kind"] == "accepted" and accepted["chosen"] is False
    assert rep["held_on_test"] is True and published == [rep["resources"]]
    res = ResourceSet.from_dict("published", rep["resources"])
    assert res.for_input({"x": "y" * 25}).llm("llm", "format").model == "mini"
    assert res.for_input({"x": "y" * 60}).llm("llm", "format").model == "big"
    rewards = rep["test_rewards"]
    assert rewards["winner"].count(0.0) == 1 and rewards["fallback 1"] == [1.0] * 11
    long = [len(t.input["x"]) > 50 for t in split.test]
    n_long = sum(long)
    expected_cost = (n_long * 12.0 + (11 - n_long) * 4.0) / 11  # baseline 12, winner 4
    assert rep["optimized"]["cost_per_run"] == pytest.approx(expected_cost)
    md = (tmp_path / "report.md").read_text()
    assert "| 1 | the winner, inputs over 25 characters on the baseline |" in md
    assert "fallback 1 was chosen" in md
    assert "- route (fitted on train and val): inputs over 25 characters on the baseline" in md


async def test_no_route_asked_keeps_the_earlier_fallback(tmp_path):
    split = split_tasks(_long_tasks(), seed=0)
    long_test = [t for t in split.test if len(t.input["x"]) > 50]
    rep, _ = await _train(tmp_path, {long_test[0].id}, route=False)
    assert "route" not in rep
    (fallback,) = rep["fallbacks"]
    assert fallback["kind"] == "accepted" and fallback["chosen"] is True
    assert step_resource(rep["resources"], "llm", "format")["model"] == "big"
    assert not any("|input>" in k for k in rep["resources"])


async def test_the_winner_itself_is_published_when_it_holds(tmp_path):
    rep, published = await _train(tmp_path, set())
    assert rep["route"]["max_chars"] == 25
    assert rep["fallbacks"][0]["kind"] == "routed" and not rep["fallbacks"][0]["chosen"]
    assert not any("|input>" in k for k in published[0])
