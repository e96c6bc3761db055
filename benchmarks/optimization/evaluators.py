"""Rewards for each task family, and the answer normalizers the vote reducers share.

Why lenient parsing: the rewards judge the answer, not the wrapping; small models add words,
code fences or a trailing period, and a benchmark that failed them for it would measure the
format, not whether optimization kept quality. Each evaluator has the engine's signature
``f(input, output, expected) -> float`` so a workflow file names it as ``module:function``.
"""

from __future__ import annotations

import json
import re
from typing import Any

_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def last_number(text: Any) -> float | None:
    """The last number written in ``text`` (``$1,200.50`` -> 1200.5), or None."""
    if isinstance(text, int | float):
        return float(text)
    found = _NUMBER.findall(str(text or ""))
    if not found:
        return None
    raw = found[-1].replace("$", "").replace(",", "")
    try:
        return float(raw)
    except ValueError:
        return None


def arithmetic_reward(input: Any, output: Any, expected: Any) -> float:
    value = last_number(output)
    return 1.0 if value is not None and abs(value - float(expected)) < 1e-6 else 0.0


def parse_json_object(text: Any) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (inside a code fence or not), or None."""
    if isinstance(text, dict):
        return text
    s = str(text or "")
    fenced = _FENCE.search(s)
    if fenced:
        s = fenced.group(1)
    start = s.find("{")
    while start != -1:
        depth = 0
        for i in range(start, len(s)):
            if s[i] == "{":
                depth += 1
            elif s[i] == "}":
                depth -= 1
                if depth == 0:
                    try:
                        obj = json.loads(s[start : i + 1])
                    except ValueError:
                        break
                    return obj if isinstance(obj, dict) else None
        start = s.find("{", start + 1)
    return None


def _same_value(got: Any, want: Any) -> bool:
    if isinstance(want, int | float) and not isinstance(want, bool):
        num = last_number(got)
        return num is not None and abs(num - float(want)) < 1e-6
    return str(got).strip().strip(".").casefold() == str(want).strip().casefold()


def extraction_reward(input: Any, output: Any, expected: Any) -> float:
    """The share of gold fields present with the right value (keys matched case-insensitively)."""
    obj = parse_json_object(output)
    if obj is None or not expected:
        return 0.0
    by_key = {str(k).strip().casefold(): v for k, v in obj.items()}
    hits = sum(
        1 for k, v in expected.items() if k.casefold() in by_key and _same_value(by_key[k], v)
    )
    return hits / len(expected)


def first_label(text: Any, labels: str | list[str]) -> str | None:
    """The label named first in ``text`` (whole words, case-insensitive), or None."""
    names = [x.strip() for x in labels.split(",")] if isinstance(labels, str) else labels
    best: tuple[int, str] | None = None
    low = str(text or "").casefold()
    for name in names:
        m = re.search(rf"\b{re.escape(name.casefold())}\b", low)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), name)
    return best[1] if best else None


def classification_reward(input: Any, output: Any, expected: Any) -> float:
    labels = input.get("labels", "") if isinstance(input, dict) else ""
    return 1.0 if first_label(output, labels or [str(expected)]) == expected else 0.0


REWARDS = {
    "arithmetic": arithmetic_reward,
    "extraction": extraction_reward,
    "classification": classification_reward,
}
