"""Evaluators used by the trainer tests' workflows."""

from __future__ import annotations

from typing import Any


def contains_expected(input: Any, output: Any, expected: Any) -> float:
    return 1.0 if str(expected) in str(output).split() else 0.0


def mentions_expected(input: Any, output: Any, expected: Any) -> float:
    """1.0 when the expected word appears in the answer (case-insensitive)."""
    return 1.0 if str(expected).lower() in str(output).lower() else 0.0
