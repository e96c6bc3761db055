"""benchmarks/optimization/probes/agreement.py: the vote's requests, and the lazy vote's figures."""

from __future__ import annotations

import json

import pytest
from benchmarks.optimization.probes.agreement import vote_figures, vote_request
from benchmarks.optimization.probes.answers import AnswerCache
from benchmarks.optimization.tasks import generate
from benchmarks.optimization.workflows import StepChoice, uniform_config, workflow_spec

from lightspan.engine import PriceTable, workflow_from_dict

PRICES = PriceTable({"big": {"input": 3.0, "output": 5.0}, "small": {"input": 1.0, "output": 1.0}})


async def test_each_request_is_what_the_vote_workflow_sends(fake_llm) -> None:
    task = generate("extraction", "train", 1, seed=99)[0]
    spec = workflow_spec(
        "extraction",
        "vote",
        uniform_config("vote", StepChoice("big", 256)),
        {"big": fake_llm.base_url},
    )
    assert (await workflow_from_dict(spec, source="<test>").run(task.input)).ok
    sent = sorted(
        (
            {k: r[k] for k in ("model", "messages", "max_tokens", "temperature", "seed")}
            for r in fake_llm.requests
        ),
        key=lambda r: r["seed"],
    )
    assert sent == [vote_request("big", "extraction", task, i) for i in range(3)]


def _branch(obj: dict, out: int = 10) -> dict:
    return {"text": json.dumps(obj), "in": 100, "out": out, "s": 1.0}


def test_lazy_vote_skips_the_third_branch_only_when_the_first_two_agree() -> None:
    task = generate("extraction", "train", 1, seed=99)[0]
    right = dict(task.expected)
    wrong = {k: "x" for k in task.expected}
    models = ("big", "big", "big")
    agreed = vote_figures("extraction", task, [_branch(right)] * 3, models, PRICES)
    assert agreed["agreed"] == 1.0 and agreed["calls_lazy"] == 2
    assert agreed["reward_full"] == agreed["reward_lazy"] == 1.0
    assert agreed["cost_lazy"] == pytest.approx(2 / 3 * agreed["cost_full"])
    assert agreed["s_lazy"] == 2.0
    split = vote_figures(
        "extraction", task, [_branch(right), _branch(wrong), _branch(right)], models, PRICES
    )
    assert split["agreed"] == 0.0 and split["calls_lazy"] == 3
    assert split["reward_lazy"] == split["reward_full"] == 1.0
    # Field by field: a field only the third branch wrote is lost by the lazy vote.
    partial = {k: v for k, v in right.items() if k != "name"}
    fields = vote_figures(
        "extraction", task, [_branch(partial), _branch(partial), _branch(right)], models, PRICES
    )
    assert fields["reward_full"] == 1.0 and fields["reward_lazy"] < 1.0


def test_answers_survive_a_reload(tmp_path) -> None:
    task = generate("classification", "train", 1, seed=99)[0]
    cache = AnswerCache(tmp_path / "a.jsonl")
    cache.put(task, "big", [_branch({"a": 1})])
    assert AnswerCache(tmp_path / "a.jsonl").rows == {(task.id, "big"): [_branch({"a": 1})]}
