"""Rewards and the deterministic workflow steps (vote reducers, organizers, merges)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from benchmarks.optimization import steps
from benchmarks.optimization.evaluators import (
    arithmetic_reward,
    classification_reward,
    extraction_reward,
    first_label,
    last_number,
    parse_json_object,
)
from benchmarks.optimization.tasks import LABELS, generate

LAB = ", ".join(LABELS)


@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42.0), ("so the answer is $1,200.50.", 1200.5), ("-5 then +7", 7.0), ("none", None)],
)
def test_last_number(text: str, value: float | None) -> None:
    assert last_number(text) == value


def test_arithmetic_reward() -> None:
    assert arithmetic_reward({}, "12 + 8 = 20\nThe answer is 20.", 20) == 1.0
    assert arithmetic_reward({}, "The answer is 21.", 20) == 0.0
    assert arithmetic_reward({}, "", 20) == 0.0


def test_extraction_reward_counts_fields() -> None:
    gold = {"name": "Aiko Wang", "age": 68, "city": "Osaka", "order_id": "A-2090"}
    full = '```json\n{"name": "Aiko Wang", "age": 68, "city": "osaka", "order_id": "A-2090"}\n```'
    assert extraction_reward({}, full, gold) == 1.0
    half = 'Here: {"Name": "Aiko Wang", "age": "68 years", "city": "Kyoto"}'
    assert extraction_reward({}, half, gold) == 0.5
    assert extraction_reward({}, "no json here", gold) == 0.0
    assert extraction_reward({}, "{broken", gold) == 0.0


def test_parse_json_object_skips_invalid_braces() -> None:
    assert parse_json_object('{not json} then {"a": 1}') == {"a": 1}
    assert parse_json_object('{"a": {"b": 2}}') == {"a": {"b": 2}}


def test_classification_reward_takes_the_first_label_named() -> None:
    inp = {"labels": LAB}
    assert classification_reward(inp, "Weather.", "weather") == 1.0
    assert classification_reward(inp, "It is food, not sports", "sports") == 0.0
    assert classification_reward(inp, "sportswear", "sports") == 0.0
    assert first_label("FINANCE news", LAB) == "finance"


def test_vote_reducers_take_the_majority() -> None:
    assert steps.vote_number({"a": "= 20", "b": "21", "c": "answer: 20"}) == "20"
    assert steps.vote_number({"a": "x", "b": "y", "c": "z"}) == ""
    assert steps.vote_label({"a": "sports", "b": "Food", "c": "food!"}) == "food"
    assert steps.vote_label({"a": "sports", "b": "food", "c": "?"}) == "sports"  # tie: first
    merged = json.loads(
        steps.vote_json({"a": '{"age": 3, "city": "X"}', "b": '{"age": 4}', "c": '{"age": 3}'})
    )
    assert merged == {"age": 3, "city": "X"}


def test_organizer_worker_steps_round_trip_the_gold() -> None:
    """With perfect workers, split -> merge gives exactly the gold answer."""
    for t in generate("arithmetic", "test", 10, seed=1):
        items = steps.split_arithmetic(t.input)
        assert items and all(not i["sentence"].endswith("?") for i in items)
        changes = []
        for i in items:
            s = i["sentence"]
            nums = [int(x) for x in __import__("re").findall(r"\d+", s)]
            if " has " in s or "buys" in s:
                changes.append(f"+{nums[0]}")
            elif "boxes" in s:
                changes.append(f"+{nums[0] * nums[1]}")
            else:
                changes.append(f"-{nums[0]}")
        assert arithmetic_reward(t.input, steps.merge_arithmetic(changes), t.expected) == 1.0
    for t in generate("extraction", "test", 10, seed=1):
        items = steps.split_fields(t.input)
        answers = [f"{i['field']}: {t.expected[i['field']]}." for i in items]
        ctx = SimpleNamespace(input=t.input)
        assert extraction_reward(t.input, steps.merge_fields(answers, ctx), t.expected) == 1.0
    for t in generate("classification", "test", 10, seed=1):
        items = steps.split_sentences(t.input)
        assert len(items) == {1: 1, 2: 2, 3: 3}[t.difficulty]
        labels = [t.expected] * len(items)
        assert steps.merge_labels(labels) == t.expected


def test_sequence_glue_keeps_the_run_input() -> None:
    ctx = SimpleNamespace(input={"question": "q"})
    assert steps.carry_plan(" p ", ctx) == {"question": "q", "plan": "p"}
    assert steps.carry_solution("s", ctx) == {"question": "q", "solution": "s"}
