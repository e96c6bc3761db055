"""The store's bounds on request shape: how deep a value may nest, how big a request or a page is.

Why one module: every recursive path of the store (the Rust and the Python OTLP converters, JSON
parsing of OTLP/JSON and REST bodies, the REST models' free-form values) must stop at the same
depth, so a value one path stores another does not reject, and no input can exhaust the stack
(a 15,000-deep OTLP kvlist once crashed the server). A request past a bound gets a clear error
naming it (400 / 422 / 413 / ``INVALID_ARGUMENT`` / ``partial_success``), never a 5xx.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "MAX_JSON_BODY_DEPTH",
    "MAX_NESTING_DEPTH",
    "MAX_PAGE_LIMIT",
    "MAX_SQL_INTEGER",
    "BodyTooDeep",
    "IntegerOutOfRange",
    "check_nesting",
    "json_depth_exceeds",
    "loads_bounded",
]

MAX_NESTING_DEPTH = 32
"""The deepest a value may nest: an attribute's (or a REST field's) own value is level 1, an
item of an array/kvlist/object one level deeper. Why 32: the Python OTLP converter parses values
with protobuf, whose parser refuses messages nested deeper than 100 (three per kvlist level plus
the request's envelope); 32 is the most every path can parse, so the Rust converter
(``native/src/conversion.rs``, ``MAX_NESTING_DEPTH``, checked equal by a test) and Python agree.
"""

MAX_JSON_BODY_DEPTH = 4 * MAX_NESTING_DEPTH + 16
"""The deepest JSON body accepted: enough for a value at :data:`MAX_NESTING_DEPTH` inside OTLP/JSON
(four JSON containers per kvlist level, plus the request's envelope); deeper is refused before
any recursive processing (Python's own recursion limit is ~1,000 frames)."""

MAX_PAGE_LIMIT = 10_000
"""The largest ``limit`` a REST query may ask for: a page is built in memory."""

MAX_SQL_INTEGER = 2**63 - 1
"""Integers a REST body may carry where the store keeps them in SQL (64-bit signed)."""


class BodyTooDeep(ValueError):
    """A JSON body or value nests deeper than allowed; the message names the limit."""


_INT_MIN = -MAX_SQL_INTEGER - 1


class IntegerOutOfRange(ValueError):
    """A JSON body carries an integer beyond 64 bits (what the SQL backends keep)."""


def json_depth_exceeds(value: Any, limit: int, *, check_integers: bool = False) -> bool:
    """Whether a parsed JSON value nests deeper than ``limit`` levels: the value itself is level
    1, an item of a list or object one level deeper than it (as OTLP values are counted, so
    ``[[1]]`` is 3 deep). Iterative: safe on any input. With ``check_integers``, raises
    :class:`IntegerOutOfRange` for an integer outside the signed 64-bit range."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > limit:
            return True
        if check_integers and type(node) is int and not _INT_MIN <= node <= MAX_SQL_INTEGER:
            raise IntegerOutOfRange(
                f"an integer of {node.bit_length()} bits is outside the signed 64-bit range "
                "this server stores"
            )
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if level == limit and children:
            return True
        level += 1
        kinds = (dict, list, int) if check_integers else (dict, list)
        stack.extend((c, level) for c in children if isinstance(c, kinds))
    return False


def check_nesting(value: Any) -> Any:
    """A pydantic after-validator for free-form JSON fields (rollout input, metadata): refuses
    values nested deeper than :data:`MAX_NESTING_DEPTH` (a 422 naming the limit over REST)."""
    if json_depth_exceeds(value, MAX_NESTING_DEPTH):
        raise ValueError(f"value nests deeper than {MAX_NESTING_DEPTH} levels (the limit)")
    return value


def loads_bounded(
    body: bytes | str, limit: int = MAX_JSON_BODY_DEPTH, *, check_integers: bool = False
) -> Any:
    """``json.loads`` that refuses bodies nested deeper than ``limit`` with :class:`BodyTooDeep`
    (and turns the parser's own ``RecursionError`` into it). Other errors are ``ValueError``."""
    if isinstance(body, (bytes, bytearray)):
        # Strict UTF-8: json.loads(bytes) would let encoded surrogates through ("surrogatepass").
        body = body.decode("utf-8")
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise BodyTooDeep(
            f"JSON body nests deeper than {limit} levels (the limit of this server)"
        ) from exc
    if json_depth_exceeds(data, limit, check_integers=check_integers):
        raise BodyTooDeep(f"JSON body nests deeper than {limit} levels (the limit of this server)")
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(data):
        # "\ud800" alone is valid JSON but not Unicode text: nothing downstream can store it.
        raise ValueError("a string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)")
    return data


_SURROGATE_ESCAPE = re.compile(r"\\[uU][dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False
