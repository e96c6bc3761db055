"""A backend-neutral description of a filtered, sorted, paginated query, evaluated in memory here.

Why: the query semantics (how ``filter_logic`` combines filters, where nulls sort, how ties
are broken) must be identical in memory and in SQL. ``LightningStore``'s query methods
(``base.py``) build a :class:`Query` from their arguments; the memory backend evaluates it with
:func:`run_query`, the SQL backends translate it (``sql.py``), the HTTP client sends it as REST
parameters (:func:`param_name`), and the conformance suite checks they agree.

Filter names follow the REST API's (and v0.3's keyword arguments'): ``x`` means field ``x``
equals, ``x_in`` is one of, ``x_contains`` contains the value. :func:`conds_from_params` and
:func:`param_name` are that rule, both ways, in one place.

Rules: ``must`` conditions always apply (AND); the other conditions are combined with ``logic``
(no conditions: everything matches). Without ``sort_by`` items come in insertion order. Nulls
sort as +infinity in ``*_time`` fields and as the smallest value elsewhere (v0.3's rule); ties
keep insertion order in both directions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Cond:
    """``field`` equals (``exact``), is one of (``within``) or contains (``contains``) ``value``."""

    field: str
    op: Literal["exact", "within", "contains"]
    value: Any


@functools.lru_cache(maxsize=256)
def _field_op(name: str) -> tuple[str, Literal["exact", "within", "contains"]]:
    """``x_contains`` -> (x, contains), ``x_in`` -> (x, within), else (name, exact); cached,
    as queries name the same few filters again and again."""
    if name.endswith("_contains"):
        return name[: -len("_contains")], "contains"
    if name.endswith("_in"):
        return name[: -len("_in")], "within"
    return name, "exact"


def conds_from_params(params: dict[str, Any]) -> list[Cond]:
    """The conditions named by REST-style filter names (see the module docstring), in order;
    ``None`` values are left out (no filter)."""
    conds: list[Cond] = []
    for name, value in params.items():
        if value is not None:
            field_name, op = _field_op(name)
            conds.append(Cond(field_name, op, list(value) if op == "within" else value))
    return conds


def param_name(cond: Cond) -> str:
    """The REST filter name of ``cond``: the inverse of :func:`conds_from_params`."""
    if cond.op == "exact":
        return cond.field
    return cond.field + ("_in" if cond.op == "within" else "_contains")


@dataclass(slots=True)
class Query:
    """What to read: ``must`` always applies, ``conds`` combine with ``logic``, then sort and
    page (``limit`` -1: all)."""

    must: list[Cond] = field(default_factory=list)
    conds: list[Cond] = field(default_factory=list)
    logic: Literal["and", "or"] = "and"
    sort_by: str | None = None
    sort_order: Literal["asc", "desc"] = "asc"
    limit: int = -1
    offset: int = 0


def _cond_holds(value: Any, cond: Cond) -> bool:
    if cond.op == "exact":
        return value == cond.value
    if cond.op == "within":
        return value in cond.value
    if value is None:
        return False
    return str(cond.value) in value


def matches(item: Any, q: Query, get: Callable[[Any, str], Any]) -> bool:
    for c in q.must:
        if not _cond_holds(get(item, c.field), c):
            return False
    if not q.conds:
        return True
    results = (_cond_holds(get(item, c.field), c) for c in q.conds)
    return all(results) if q.logic == "and" else any(results)


def sort_key(field_name: str) -> Callable[[Any], tuple[int, Any]]:
    """Key for ascending order following the null rule above (applied to a field value)."""
    if field_name.endswith("_time"):
        return lambda v: (1, 0) if v is None else (0, v)
    return lambda v: (0, 0) if v is None else (1, v)


def run_query(items: Iterable[T], q: Query, get: Callable[[T, str], Any]) -> tuple[list[T], int]:
    """Filter, sort and paginate ``items`` (given in insertion order); returns (page, total)."""
    if q.must or q.conds:
        hits = [it for it in items if matches(it, q, get)]
    else:
        hits = list(items)
    if q.sort_by:
        key = sort_key(q.sort_by)
        hits.sort(key=lambda it: key(get(it, q.sort_by)), reverse=q.sort_order == "desc")
    end = None if q.limit == -1 else q.offset + q.limit
    return hits[q.offset : end], len(hits)
