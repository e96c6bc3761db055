"""Generated task families with known answers, seeded, at three difficulty levels.

Why generated: the benchmark needs many labeled tasks whose gold answer is certain, and a
new seed must give new tasks, so nothing can be tuned to a fixed test set.

Why splits come from a hash of the task's content (not from the seed or a position): the
same task text always lands in the same split, whichever seed or difficulty produced it, so
train, val and test can never share a task, even across seeds.

Families (each input is a dict that fills the prompt templates):

- ``arithmetic``: a count that changes sentence by sentence; ``expected`` is an int.
- ``extraction``: fields of a short record into JSON; ``expected`` is ``{field: value}``.
- ``classification``: the topic of a few sentences; ``expected`` is one gold label.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
FAMILIES: tuple[str, ...] = ("arithmetic", "extraction", "classification")
DIFFICULTIES: tuple[int, ...] = (1, 2, 3)
# Share of hash buckets (out of 10) per split: 60% train, 20% val, 20% test.
_BUCKETS: dict[Split, range] = {"train": range(0, 6), "val": range(6, 8), "test": range(8, 10)}


@dataclass(frozen=True, slots=True)
class Task:
    """One labeled task: ``input`` fills the workflow's prompts, ``expected`` is gold."""

    id: str
    family: str
    difficulty: int
    input: dict[str, Any]
    expected: Any

    @property
    def split(self) -> Split:
        return split_of(self.family, self.input)

    def to_row(self) -> dict[str, Any]:
        """The trainer's task-file row (``{"id", "input", "expected"}``)."""
        return {"id": self.id, "input": self.input, "expected": self.expected}


def content_key(family: str, input: dict[str, Any]) -> str:
    """A stable digest of a task's content: its identity for splits and de-duplication."""
    blob = json.dumps({"family": family, "input": input}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def split_of(family: str, input: dict[str, Any]) -> Split:
    bucket = int(content_key(family, input)[:8], 16) % 10
    for name, buckets in _BUCKETS.items():
        if bucket in buckets:
            return name
    raise AssertionError(bucket)  # pragma: no cover - the buckets cover 0..9


# --- arithmetic ---------------------------------------------------------------------------

_NAMES = ["Tom", "Ana", "Ravi", "Mei", "Lena", "Omar", "Sara", "Yuki", "Pablo", "Nina", "Ivan"]
_PRONOUN = {
    "Tom": "He",
    "Ravi": "He",
    "Omar": "He",
    "Pablo": "He",
    "Ivan": "He",
    "Ana": "She",
    "Mei": "She",
    "Lena": "She",
    "Sara": "She",
    "Yuki": "She",
    "Nina": "She",
}
_THINGS = ["apples", "marbles", "stickers", "books", "coins", "pencils", "cookies", "stamps"]


def _arithmetic(rng: random.Random, difficulty: int) -> tuple[dict[str, Any], Any]:
    """Start with a count, then ``difficulty`` (+1 at level 3) changes, then the question."""
    name, things = rng.choice(_NAMES), rng.choice(_THINGS)
    he = _PRONOUN[name]
    total = rng.randint(5, 20 * difficulty)
    sentences = [f"{name} has {total} {things}."]
    n_ops = {1: 1, 2: 2, 3: 4}[difficulty]
    kinds = ["add", "sub"] + (["groups"] if difficulty >= 2 else [])
    for _ in range(n_ops):
        kind = rng.choice(kinds)
        if kind == "sub" and total < 2:
            kind = "add"
        if kind == "add":
            b = rng.randint(2, 9 * difficulty)
            total += b
            sentences.append(f"{he} buys {b} more {things}.")
        elif kind == "groups":
            k, m = rng.randint(2, 5), rng.randint(2, 6)
            total += k * m
            sentences.append(f"{he} gets {k} boxes with {m} {things} in each box.")
        else:
            c = rng.randint(1, total - 1)
            total -= c
            sentences.append(f"{he} gives {c} {things} to a friend.")
    sentences.append(f"How many {things} does {name} have now?")
    return {"question": " ".join(sentences)}, total


# --- extraction ---------------------------------------------------------------------------

_FIRST = ["Maria", "John", "Aiko", "Lucas", "Fatima", "Peter", "Chen", "Olga", "Diego", "Emma"]
_LAST = ["Lopez", "Smith", "Tanaka", "Silva", "Khan", "Novak", "Wang", "Petrova", "Ruiz", "Berg"]
_CITIES = [
    "Porto",
    "Denver",
    "Osaka",
    "Recife",
    "Lahore",
    "Brno",
    "Xian",
    "Kazan",
    "Quito",
    "Bergen",
]
_PRODUCTS = ["desk lamp", "backpack", "kettle", "keyboard", "rain jacket", "bike helmet"]


def _extraction(rng: random.Random, difficulty: int) -> tuple[dict[str, Any], Any]:
    """A short customer record; more fields and distractor facts as difficulty grows."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    name, age, city = f"{first} {last}", rng.randint(19, 79), rng.choice(_CITIES)
    gold: dict[str, Any] = {"name": name, "age": age, "city": city}
    parts = [f"{name} is {age} years old and lives in {city}."]
    if difficulty >= 2:
        order_id = f"A-{rng.randint(1000, 9999)}"
        product = rng.choice(_PRODUCTS)
        gold["order_id"] = order_id
        parts.append(f"{first} placed order {order_id} for a {product}.")
    if difficulty >= 3:
        amount = rng.randint(12, 480)
        gold["amount"] = amount
        other_city = rng.choice([c for c in _CITIES if c != city])
        other_age = rng.choice([a for a in range(19, 80) if a != age])
        parts.append(f"The order total was {amount} dollars.")
        # Distractors: another person's age and city.
        parts.insert(0, f"{first}'s cousin, aged {other_age}, moved to {other_city} last year.")
    return {"text": " ".join(parts), "fields": ", ".join(gold)}, gold


# --- classification -----------------------------------------------------------------------

LABELS: tuple[str, ...] = ("sports", "weather", "finance", "food")
_TOPIC: dict[str, list[str]] = {
    "sports": [
        "The {team} won the final {a} to {b} after extra time.",
        "Our striker scored twice in the second half against the {team}.",
        "The coach of the {team} was fined after the match.",
        "She ran the marathon in under {a} hours.",
    ],
    "weather": [
        "Heavy rain is expected in {city} on {day}.",
        "Temperatures will drop to {a} degrees overnight in {city}.",
        "A storm with strong winds reaches {city} on {day}.",
        "The forecast for {day} is sunny with a light breeze.",
    ],
    "finance": [
        "Shares of {co} fell {a} percent after the earnings report.",
        "The central bank raised interest rates by {a} basis points.",
        "{co} announced a dividend of {a} cents per share.",
        "Bond yields rose on {day} as inflation data surprised.",
    ],
    "food": [
        "Simmer the tomatoes with garlic for {a} minutes.",
        "The new bakery in {city} sells sourdough and rye bread.",
        "Add {a} grams of sugar and whisk the eggs until fluffy.",
        "This soup tastes better with fresh basil and lemon.",
    ],
}
_FILL = {
    "team": ["Lions", "Rovers", "Falcons", "Tigers", "United"],
    "city": _CITIES,
    "day": ["Monday", "Tuesday", "Friday", "Sunday"],
    "co": ["Acme Corp", "Globex", "Initech", "Umbrella"],
}


def _sentence(rng: random.Random, label: str, tpl: str | None = None) -> str:
    tpl = tpl or rng.choice(_TOPIC[label])
    return tpl.format(
        a=rng.randint(2, 60), b=rng.randint(0, 5), **{k: rng.choice(v) for k, v in _FILL.items()}
    )


def _classification(rng: random.Random, difficulty: int) -> tuple[dict[str, Any], Any]:
    """1, 2 or 3 sentences; at level 3 one sentence is off-topic (the majority is gold)."""
    label = rng.choice(LABELS)
    n_gold = {1: 1, 2: 2, 3: 2}[difficulty]
    sentences = [_sentence(rng, label, t) for t in rng.sample(_TOPIC[label], n_gold)]
    if difficulty >= 3:
        other = rng.choice([x for x in LABELS if x != label])
        sentences.insert(rng.randint(0, len(sentences)), _sentence(rng, other))
    return {"text": " ".join(sentences), "labels": ", ".join(LABELS)}, label


GENERATORS: dict[str, Callable[[random.Random, int], tuple[dict[str, Any], Any]]] = {
    "arithmetic": _arithmetic,
    "extraction": _extraction,
    "classification": _classification,
}


def generate(
    family: str,
    split: Split,
    n: int,
    *,
    seed: int,
    difficulties: tuple[int, ...] = DIFFICULTIES,
    max_draws: int = 100_000,
) -> list[Task]:
    """``n`` distinct tasks of ``family`` that belong to ``split``, cycling the difficulties.

    Deterministic per ``(family, split, n, seed, difficulties)``.
    """
    if family not in GENERATORS:
        raise ValueError(f"unknown task family {family!r}; known: {', '.join(GENERATORS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    bad = [d for d in difficulties if d not in DIFFICULTIES]
    if bad or not difficulties:
        raise ValueError(f"difficulties {difficulties!r}: each must be one of {DIFFICULTIES}")
    gen = GENERATORS[family]
    rngs = {d: random.Random(f"{family}/{seed}/{d}") for d in difficulties}
    tasks: list[Task] = []
    seen: set[str] = set()
    for _ in range(max_draws):
        if len(tasks) == n:
            return tasks
        difficulty = difficulties[len(tasks) % len(difficulties)]
        inp, expected = gen(rngs[difficulty], difficulty)
        key = content_key(family, inp)
        if key in seen or split_of(family, inp) != split:
            continue
        seen.add(key)
        tasks.append(Task(f"{family}-{key[:12]}", family, difficulty, inp, expected))
    raise RuntimeError(
        f"could only generate {len(tasks)} of {n} distinct {family} tasks for {split!r} "
        f"in {max_draws} draws; ask for fewer or more difficulty levels"
    )
