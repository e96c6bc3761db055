"""Python steps of ``qa.yaml``: turn the model's reply into a number, and score it.

Why a module next to the YAML file: ``load_workflow`` makes the workflow file's directory
importable, so ``call: qa_steps:first_number`` works from any current directory.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def first_number(reply: str) -> int | float | None:
    """The number a reply gives: after 'Answer:' if the model wrote one, else the last number
    of its first non-empty line (``7 + 5 = 12`` -> 12; small models often restate the sum).

    Whole numbers come back as ``int`` so that an answer prints as ``12``, not ``12.0``.
    """
    text = reply.rsplit("Answer:", 1)[-1] if "Answer:" in reply else reply
    lines = [line for line in text.replace(",", "").splitlines() if _NUMBER.search(line)]
    if not lines:
        return None
    value = float(_NUMBER.findall(lines[0])[-1])
    return int(value) if value.is_integer() else value


def exact(_input: Any, output: Any, expected: Any) -> float:
    """Reward 1.0 when the extracted number equals the expected one, else 0.0."""
    try:
        return float(output is not None and float(output) == float(expected))
    except (TypeError, ValueError):
        return 0.0
