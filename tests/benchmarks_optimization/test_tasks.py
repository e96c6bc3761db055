"""The generated task families: deterministic per seed, disjoint splits, correct gold."""

from __future__ import annotations

import re

import pytest
from benchmarks.optimization.tasks import (
    DIFFICULTIES,
    FAMILIES,
    LABELS,
    SPLITS,
    content_key,
    generate,
    split_of,
)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_tasks_new_seed_new_tasks(family: str) -> None:
    a = generate(family, "test", 12, seed=7)
    b = generate(family, "test", 12, seed=7)
    c = generate(family, "test", 12, seed=8)
    assert a == b
    assert {t.id for t in a} != {t.id for t in c}
    assert len({t.id for t in a}) == 12  # distinct within a split


@pytest.mark.parametrize("family", FAMILIES)
def test_splits_never_share_a_task_even_across_seeds(family: str) -> None:
    keys: dict[str, set[str]] = {s: set() for s in SPLITS}
    for seed in (0, 1, 2):
        for split in SPLITS:
            for t in generate(family, split, 20, seed=seed):
                assert t.split == split
                keys[split].add(content_key(family, t.input))
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_difficulty_level_is_generated(family: str) -> None:
    tasks = generate(family, "train", 9, seed=0)
    assert {t.difficulty for t in tasks} == set(DIFFICULTIES)


def _replay_arithmetic(question: str) -> int:
    """Recompute the answer from the text alone, independently of the generator."""
    total = 0
    for s in re.split(r"(?<=[.?])\s+", question):
        if m := re.search(r" has (\d+) ", s):
            total = int(m.group(1))
        elif m := re.search(r"buys (\d+) more", s):
            total += int(m.group(1))
        elif m := re.search(r"gets (\d+) boxes with (\d+)", s):
            total += int(m.group(1)) * int(m.group(2))
        elif m := re.search(r"gives (\d+) ", s):
            total -= int(m.group(1))
    return total


def test_arithmetic_gold_matches_the_text() -> None:
    for t in generate("arithmetic", "val", 30, seed=3):
        assert t.expected == _replay_arithmetic(t.input["question"])
        assert t.expected >= 0


def test_extraction_gold_fields_appear_in_the_text() -> None:
    for t in generate("extraction", "val", 30, seed=3):
        assert list(t.expected) == [f.strip() for f in t.input["fields"].split(",")]
        assert f"{t.expected['name']} is {t.expected['age']} years old" in t.input["text"]
        for v in t.expected.values():
            assert str(v) in t.input["text"]


def test_classification_gold_is_a_label() -> None:
    for t in generate("classification", "val", 30, seed=3):
        assert t.expected in LABELS
        assert t.input["labels"] == ", ".join(LABELS)


def test_split_of_is_stable() -> None:
    inp = {"question": "Tom has 3 apples. How many apples does Tom have now?"}
    assert split_of("arithmetic", inp) == split_of("arithmetic", dict(inp))


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown task family 'poetry'"):
        generate("poetry", "test", 1, seed=0)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        generate("arithmetic", "dev", 1, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="difficulties"):
        generate("arithmetic", "test", 1, seed=0, difficulties=(4,))
    with pytest.raises(RuntimeError, match="could only generate"):
        generate("classification", "test", 10_000, seed=0, difficulties=(1,), max_draws=2000)
