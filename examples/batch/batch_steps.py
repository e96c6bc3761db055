"""Python steps of ``batch.yaml``: plan the batch, pick an answer, score the batch.

The same workflow as ``lightspan demo`` (src/lightspan/demo.py), written as a YAML file.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(text: str) -> int | float | None:
    """The number after 'Answer:' if present, else the last number; whole numbers as int."""
    tail = text.rsplit("Answer:", 1)[-1] if "Answer:" in text else text
    found = _NUMBER.findall(tail.replace(",", "")) or _NUMBER.findall(text.replace(",", ""))
    if not found:
        return None
    value = float(found[-1])
    return int(value) if value.is_integer() else value


def plan(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The organizer: one work item per question."""
    return [{"question": q} for q in batch["questions"]]


def pick(answers: dict[str, str]) -> dict[str, Any]:
    """The join's reducer: the step-by-step answer's number, else the concise one."""
    step = last_number(answers.get("stepwise", ""))
    concise = last_number(answers.get("concise", ""))
    return {"answer": step if step is not None else concise}


def accuracy(_batch: Any, output: list[dict[str, Any]], expected: list[float]) -> float:
    """The evaluator: the share of questions answered right."""
    right = sum(1 for o, e in zip(output, expected, strict=True) if o["answer"] == e)
    return right / len(expected)
