"""Evaluator of the APO test workflow (imported by ``lightspan runner serve`` by name)."""

from __future__ import annotations

from typing import Any


def contains_expected(inp: Any, output: Any, expected: Any) -> float:
    """1.0 when the expected answer appears in the output (case-insensitive), else 0.0."""
    return 1.0 if str(expected).lower() in str(output).lower() else 0.0
