"""The deterministic steps of the benchmark workflows: glue, organizers, reducers, merges.

Why separate from the prompts: these are plain functions the workflow files name as
``module:function`` (so ``lightspan run`` and the trainer load the same workflows), and the
unit tests check them without a model. None of them sees the gold answer.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from benchmarks.optimization.evaluators import first_label, last_number, parse_json_object
from benchmarks.optimization.tasks import LABELS

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


# --- sequence glue: the next prompt needs the run input plus the previous step's text ------


def carry_plan(value: Any, ctx: Any) -> dict[str, Any]:
    return {**ctx.input, "plan": str(value).strip()}


def carry_solution(value: Any, ctx: Any) -> dict[str, Any]:
    return {**ctx.input, "solution": str(value).strip()}


# --- fork/join vote reducers (get {branch: text}) ------------------------------------------


def _majority(values: Iterable[Any]) -> Any:
    """The most common value; ties go to the one seen first (branch order)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    counts = Counter(vals)
    top = max(counts.values())
    return next(v for v in vals if counts[v] == top)


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def vote_number(results: Mapping[str, Any]) -> str:
    winner = _majority(last_number(t) for t in results.values())
    return "" if winner is None else _fmt_number(winner)


def vote_label(results: Mapping[str, Any]) -> str:
    return _majority(first_label(t, list(LABELS)) for t in results.values()) or ""


def vote_json(results: Mapping[str, Any]) -> str:
    """Field by field majority over the branches' JSON objects."""
    objs = [o for o in (parse_json_object(t) for t in results.values()) if o is not None]
    keys: list[str] = []
    for o in objs:
        keys += [k for k in o if k not in keys]
    merged = {}
    for k in keys:
        vals = [json.dumps(o[k], sort_keys=True) for o in objs if k in o]
        merged[k] = json.loads(_majority(vals))
    return json.dumps(merged)


# --- what a lazy vote (``join: majority``) compares: the reducers' notion of one answer ----


def agree_number(text: Any) -> float | None:
    return last_number(text)


def agree_label(text: Any) -> str | None:
    return first_label(text, list(LABELS))


def agree_json(text: Any) -> str | None:
    """The object with keys and values as the reward compares them (case, spaces, a final dot).

    Two branches that agree here agree on every field they wrote; a field only a later branch
    writes is what ``vote_json`` (field by field) would still have taken from it."""
    obj = parse_json_object(text)
    if not obj:
        return None
    norm = {str(k).strip().casefold(): str(v).strip().strip(".").casefold() for k, v in obj.items()}
    return json.dumps(norm, sort_keys=True)


# --- organizer-worker: split -> per item -> merge ------------------------------------------


def split_arithmetic(value: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One item per statement of the problem (the question itself is not an item)."""
    q = value["question"]
    return [{"question": q, "sentence": s} for s in sentences(q) if not s.endswith("?")]


def merge_arithmetic(results: list[Any], ctx: Any = None) -> str:
    """The sum of the signed changes the workers reported (a missing number counts 0)."""
    return _fmt_number(sum(last_number(r) or 0.0 for r in results))


def split_fields(value: Mapping[str, Any]) -> list[dict[str, Any]]:
    fields = [f.strip() for f in value["fields"].split(",") if f.strip()]
    return [{"text": value["text"], "field": f} for f in fields]


def _clean_value(text: Any) -> Any:
    s = str(text).strip().splitlines()[0] if str(text).strip() else ""
    prefix, colon, rest = s.partition(":")
    if colon and len(prefix) < 25 and rest.strip():  # "Name: Maria Lopez" -> "Maria Lopez"
        s = rest
    s = s.strip().strip("\"'`").rstrip(".").strip()
    if re.fullmatch(r"[-+]?\d+", s):
        return int(s)
    return s


def value_in_text(answer: Any, item: Mapping[str, Any]) -> bool:
    """Whether the worker's value (as ``merge_fields`` reads it) is copied from the text.

    The check a user of an extraction worker writes without a gold answer: an extracted value
    appears in its text, so one that does not (a sentence about it, a field name, an empty
    reply) is wrong. A value that is in the text can still be the wrong one (a distractor)."""
    value = str(_clean_value(answer))
    text = " ".join(str(item["text"]).split()).casefold()
    return bool(value) and " ".join(value.split()).casefold() in text


def merge_fields(results: list[Any], ctx: Any) -> str:
    """``{field: value}`` in the order the run input lists the fields."""
    fields = [f.strip() for f in ctx.input["fields"].split(",") if f.strip()]
    return json.dumps({f: _clean_value(r) for f, r in zip(fields, results, strict=False)})


def split_sentences(value: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"sentence": s, "labels": value["labels"]} for s in sentences(value["text"])]


def merge_labels(results: list[Any], ctx: Any = None) -> str:
    return _majority(first_label(r, list(LABELS)) for r in results) or ""
