"""benchmarks/optimization/probes/cascade.py: the worker's requests, the value check and the cascade."""

from __future__ import annotations

import pytest
from benchmarks.optimization import steps
from benchmarks.optimization.probes.cascade import figures, item_request
from benchmarks.optimization.probes.flips import LARGE, SMALL
from benchmarks.optimization.tasks import generate
from benchmarks.optimization.workflows import StepChoice, uniform_config, workflow_spec

from lightspan.engine import PriceTable, workflow_from_dict

PRICES = PriceTable({LARGE: {"input": 3.0, "output": 5.0}, SMALL: {"input": 1.0, "output": 1.0}})


async def test_each_request_is_what_the_organizer_worker_workflow_sends(fake_llm) -> None:
    task = generate("extraction", "train", 1, seed=99)[0]
    spec = workflow_spec(
        "extraction",
        "organizer_worker",
        uniform_config("organizer_worker", StepChoice("big", 256)),
        {"big": fake_llm.base_url},
    )
    assert (await workflow_from_dict(spec, source="<test>").run(task.input)).ok
    sent = [
        {k: r[k] for k in ("model", "messages", "max_tokens", "temperature")}
        for r in fake_llm.requests
    ]
    items = steps.split_fields(task.input)
    assert sorted(sent, key=str) == sorted((item_request("big", i) for i in items), key=str)


def test_value_in_text_accepts_copied_values_only() -> None:
    item = {"text": "Maria  Silva is 54 years old and lives in Quito.", "field": "name"}
    assert steps.value_in_text("Name: maria silva.", item)
    assert steps.value_in_text("54", item)
    assert not steps.value_in_text("The name is Maria Silva", item)  # a sentence, not the value
    assert not steps.value_in_text("Lima", item)
    assert not steps.value_in_text("", item)


def _answer(text: str) -> dict:
    return {"text": text, "in": 10, "out": 2, "s": 1.0}


def test_the_cascade_escalates_exactly_the_values_not_in_the_text() -> None:
    task = next(t for t in generate("extraction", "train", 30, seed=99) if len(t.expected) == 3)
    gold = [str(task.expected[i["field"]]) for i in steps.split_fields(task.input)]
    small = [_answer(gold[0]), _answer("unknown"), _answer(gold[2])]
    large = [_answer(g) for g in gold]
    f = figures(task, small, large, PRICES)
    base, cheap, cascade = (
        f["worker on 1.5B (the baseline)"],
        f["worker on 0.5B"],
        f["0.5B, escalating a value not in the text"],
    )
    assert base["reward"] == cascade["reward"] == 1.0
    assert cheap["reward"] == pytest.approx(2 / 3)
    assert cascade["escalated"] == 1.0 and cascade["calls"] == 4.0
    assert cascade["cost"] == pytest.approx(cheap["cost"] + PRICES.cost(LARGE, 10, 2)[0])
