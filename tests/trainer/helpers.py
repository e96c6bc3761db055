"""Evaluators used by the trainer tests' workflows."""

from __future__ import annotations

from typing import Any


def contains_expected(input: Any, output: Any, expected: Any) -> float:
    return 1.0 if str(expected) in str(output).split() else 0.0
