"""Labeled tasks: JSONL rows ``{"id", "input", "expected"}``, split train/val/test with a seed.

Why a seeded split kept apart from the search: the test split is only touched to measure the
baseline and the winner, so the figures in a report are not the ones the search optimized.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TaskFileError(ValueError):
    """A task file is missing, empty, malformed or unlabeled; the message names file and line."""


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    input: Any
    expected: Any


@dataclass(frozen=True, slots=True)
class Split:
    train: list[Task]
    val: list[Task]
    test: list[Task]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def load_tasks(path: str | Path) -> list[Task]:
    """Read a JSONL task file; every row needs ``input`` and ``expected`` (ids default to the
    line number, and must be unique)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise TaskFileError(f"cannot read task file {p}: {e.strerror}") from None
    tasks: list[Task] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskFileError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise TaskFileError(f"{p}:{lineno}: a task is a JSON object, got {type(row).__name__}")
        if "input" not in row:
            raise TaskFileError(f"{p}:{lineno}: missing 'input'")
        if row.get("expected") is None:
            raise TaskFileError(
                f"{p}:{lineno}: task is unlabeled (no 'expected'); the trainer needs labels "
                "to compute rewards"
            )
        tid = str(row.get("id", lineno))
        if tid in seen:
            raise TaskFileError(f"{p}:{lineno}: duplicate task id {tid!r}")
        seen.add(tid)
        tasks.append(Task(tid, row["input"], row["expected"]))
    if not tasks:
        raise TaskFileError(f"task file {p} is empty: it needs JSONL rows {{id, input, expected}}")
    return tasks


def split_tasks(tasks: list[Task], *, seed: int = 0, val: float = 0.3, test: float = 0.3) -> Split:
    """Shuffle with ``seed`` and cut; each split gets at least one task (3 tasks minimum)."""
    if not 0 < val < 1 or not 0 < test < 1 or val + test >= 1:
        raise ValueError(f"split fractions val={val} test={test}: each in (0,1), sum below 1")
    if len(tasks) < 3:
        raise TaskFileError(
            f"{len(tasks)} task(s): at least 3 are needed to split into train, val and test"
        )
    order = list(tasks)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_test = max(1, round(n * test))
    n_val = max(1, round(n * val))
    n_train = max(1, n - n_test - n_val)
    n_val = n - n_test - n_train
    return Split(
        train=order[:n_train],
        val=order[n_train : n_train + n_val],
        test=order[n_train + n_val :],
    )
