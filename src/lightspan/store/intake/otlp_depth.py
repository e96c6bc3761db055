"""Values nested too deep for protobuf's parser: found on the wire and cut out, so that only
their span is rejected, not the whole request.

Why: protobuf's parser refuses a message nested deeper than 100 levels with a ``DecodeError``
that does not say why, and a kvlist value costs three levels per nesting level, so a span whose
attribute nests 33 kvlists deep (one past :data:`~lightspan.store.api.limits.MAX_NESTING_DEPTH`)
makes the whole ExportTraceServiceRequest unparseable. The Rust converter rejects just that span
(as OTLP's ``partial_success`` intends); the Python converter (``otlp.py``, the specification)
must do the same. When parsing a body fails, :func:`cut_too_deep` re-reads it: the envelope
(resource spans, scope spans, spans, events, links) and the AnyValue structure of attributes,
never deeper than ``MAX_NESTING_DEPTH + 1`` levels (no recursion an input can exhaust). It
returns the body without the too-deep attributes (and events, links) plus where they were, and
the converter rejects those spans with the reason the Rust converter writes.

Not a decoder: the real OTLP classes still parse (and validate) everything that is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lightspan.store.api.limits import MAX_NESTING_DEPTH

__all__ = ["DeepMarks", "NestingTooDeep", "cut_too_deep"]

DeepMarks = dict[tuple[int, ...], str]
"""Where too-deep values were cut: ``(resource index,)`` -> ``"resource"`` (every span of it is
rejected) and ``(resource, scope, span index)`` -> ``"span"``, ``"event"`` or ``"link"`` (the
first, in the order the converters read a span: its attributes, events, then links)."""


class NestingTooDeep(Exception):
    """An attribute value nests deeper than ``MAX_NESTING_DEPTH``: its span is rejected.

    Not a ``ValueError``: it must never turn into "malformed request" by accident."""


class _Unscannable(Exception):
    """The bytes are malformed (or ambiguous) before any too-deep value: not a depth problem."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift >= 70:
            raise _Unscannable
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _fields(buf: memoryview) -> Iterator[tuple[int, memoryview | None, int, int]]:
    """(field number, bytes of a length-delimited value or ``None``, start, end) of a message's
    fields, ``start:end`` being the whole field (tag included)."""
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise _Unscannable
        value = None
        if wire_type == 0:
            _, pos = _varint(buf, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos : pos + length]
            pos += length
        else:
            raise _Unscannable
        if pos > end:
            raise _Unscannable
        yield number, value, start, pos


def _kv_value(buf: memoryview) -> memoryview | None:
    value, count = None, 0
    for number, v, _, _ in _fields(buf):
        if number == 2:
            if v is None:
                raise _Unscannable
            value, count = v, count + 1
    if count > 1:
        raise _Unscannable  # merged by protobuf: the Rust converter hands it to Python too
    return value


def _any_too_deep(buf: memoryview, level: int) -> bool:
    if level > MAX_NESTING_DEPTH:
        return True
    nested, seen = None, 0
    for number, v, _, _ in _fields(buf):
        if 1 <= number <= 7:
            seen += 1
            if number in (5, 6):
                if v is None:
                    raise _Unscannable
                nested = (number, v)
    if seen > 1:
        raise _Unscannable
    if nested is None:
        return False
    kind, body = nested
    for number, item, _, _ in _fields(body):
        if number != 1:
            continue
        if item is None:
            raise _Unscannable
        if kind == 6:
            item = _kv_value(item)
            if item is None:
                continue
        if _any_too_deep(item, level + 1):
            return True
    return False


def _kv_too_deep(kv: memoryview | None) -> bool:
    if kv is None:
        raise _Unscannable
    value = _kv_value(kv)
    return value is not None and _any_too_deep(value, 1)


def _rebuild(buf: memoryview, replace: dict[int, bytes | None]) -> bytes:
    """``buf`` with the fields starting at the given offsets replaced (``None``: dropped)."""
    out = bytearray()
    for _, _, start, end in _fields(buf):
        if start in replace:
            new = replace[start]
            if new is not None:
                out += new
        else:
            out += buf[start:end]
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _cut_attributes(buf: memoryview, attributes_field: int) -> bytes | None:
    """The message without its too-deep attributes, or ``None`` when none is too deep."""
    drop: dict[int, bytes | None] = {}
    for number, v, start, _ in _fields(buf):
        if number == attributes_field and _kv_too_deep(v):
            drop[start] = None
    return _rebuild(buf, drop) if drop else None


_SPAN_PLACES = {9: "span", 11: "event", 13: "link"}
_PRIORITY = {"span": 0, "event": 1, "link": 2}


def _cut_span(buf: memoryview) -> tuple[bytes, str] | None:
    """A span without its too-deep attributes, events and links, and the place of the first."""
    replace: dict[int, bytes | None] = {}
    place: str | None = None
    for number, v, start, _ in _fields(buf):
        where = _SPAN_PLACES.get(number)
        if where is None:
            continue
        if v is None:
            raise _Unscannable
        if where == "span":
            deep = _kv_too_deep(v)
        else:  # an event's attributes are its field 3, a link's its field 4
            deep = _cut_attributes(v, 3 if where == "event" else 4) is not None
        if deep:
            replace[start] = None
            if place is None or _PRIORITY[where] < _PRIORITY[place]:
                place = where
    if place is None:
        return None
    return _rebuild(buf, replace), place


def cut_too_deep(body: bytes) -> tuple[bytes, DeepMarks] | None:
    """``body`` without the values nested deeper than the limit, and where they were; ``None``
    when there is none, or the body is malformed before one (then the parser's error stands)."""
    marks: DeepMarks = {}
    try:
        out = _cut_request(memoryview(body), marks)
    except _Unscannable:
        return None
    return (out, marks) if marks else None


def _cut_request(buf: memoryview, marks: DeepMarks) -> bytes:
    replace: dict[int, bytes | None] = {}
    r = 0
    for number, rs, start, _ in _fields(buf):
        if number != 1:
            continue
        if rs is None:
            raise _Unscannable
        new = _cut_resource_spans(rs, r, marks)
        if new is not None:
            replace[start] = _field(1, new)
        r += 1
    return _rebuild(buf, replace) if replace else bytes(buf)


def _cut_resource_spans(buf: memoryview, r: int, marks: DeepMarks) -> bytes | None:
    replace: dict[int, bytes | None] = {}
    s = 0
    for number, v, start, _ in _fields(buf):
        if number not in (1, 2):
            continue
        if v is None:
            raise _Unscannable
        if number == 1:  # the Resource: its attributes are field 1
            new = _cut_attributes(v, 1)
            if new is not None:
                marks[(r,)] = "resource"
                replace[start] = _field(1, new)
            continue
        new = _cut_scope_spans(v, r, s, marks)
        if new is not None:
            replace[start] = _field(2, new)
        s += 1
    return _rebuild(buf, replace) if replace else None


def _cut_scope_spans(buf: memoryview, r: int, s: int, marks: DeepMarks) -> bytes | None:
    replace: dict[int, bytes | None] = {}
    i = 0
    for number, v, start, _ in _fields(buf):
        if number != 2:
            continue
        if v is None:
            raise _Unscannable
        cut: Any = _cut_span(v)
        if cut is not None:
            marks[(r, s, i)] = cut[1]
            replace[start] = _field(2, cut[0])
        i += 1
    return _rebuild(buf, replace) if replace else None
