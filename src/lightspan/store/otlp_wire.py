"""Shadow protobuf types for OTLP trace export bodies: the same wire format, cheaper to read.

Why: reading a span's attributes through the generated OTLP classes costs ~1 us per attribute
(a Python object per ``KeyValue`` and per ``AnyValue``, a ``WhichOneof`` call, a field read),
which made attribute conversion the largest cost of the whole intake. These shadow messages
declare the OTLP fields with the same numbers and wire types, but keep each attribute's
``KeyValue`` (and the resource, status, events and links) as its raw bytes. Attribute bytes
repeat a lot in practice (model names, roles, operation names, parameters), so
:func:`attributes_from_raw` memoises the converted ``(key, value)`` of short scalar attributes
by their bytes (at most 65,536 of at most 256 bytes: ~20 MB); the rest is decoded with the
real OTLP classes, which also validate them exactly as parsing the real request would (e.g.
UTF-8 of string values).

Only the OTLP/protobuf intake uses this (``otlp.spans_from_protobuf``); the conversion rules
stay in ``otlp.py``. Differences from parsing with the real classes, only on inputs no OTLP
exporter produces: a singular sub-message (resource, status) sent twice is not merged (the last
wins); the instrumentation scope is never decoded, and the status, events and links of a span
rejected for its ids are not decoded either, so invalid UTF-8 *there* does not fail the whole
request (it does anywhere else: 400 / ``INVALID_ARGUMENT``, as before).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from .limits import MAX_NESTING_DEPTH

__all__ = [
    "NestingTooDeep",
    "ShadowRequest",
    "attributes_from_raw",
    "decode_key_value",
    "raw_too_deep",
]


class NestingTooDeep(Exception):
    """An attribute value nests deeper than ``MAX_NESTING_DEPTH``: its span is rejected.

    Not a ``ValueError``: it must never turn into "malformed request" by accident."""


_F = descriptor_pb2.FieldDescriptorProto
_BYTES, _STRING, _FIXED64, _FIXED32, _UINT32, _INT32, _MSG = (
    _F.TYPE_BYTES,
    _F.TYPE_STRING,
    _F.TYPE_FIXED64,
    _F.TYPE_FIXED32,
    _F.TYPE_UINT32,
    _F.TYPE_INT32,
    _F.TYPE_MESSAGE,
)
_ONE, _MANY = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# (message, [(field name, number, type, label, message type name)]), as in OTLP trace.proto v1.
_MESSAGES: list[tuple[str, list[tuple[str, int, int, int, str]]]] = [
    (
        "Span",
        [
            ("trace_id", 1, _BYTES, _ONE, ""),
            ("span_id", 2, _BYTES, _ONE, ""),
            ("trace_state", 3, _STRING, _ONE, ""),
            ("parent_span_id", 4, _BYTES, _ONE, ""),
            ("name", 5, _STRING, _ONE, ""),
            ("kind", 6, _INT32, _ONE, ""),
            ("start_time_unix_nano", 7, _FIXED64, _ONE, ""),
            ("end_time_unix_nano", 8, _FIXED64, _ONE, ""),
            ("attributes", 9, _BYTES, _MANY, ""),  # raw KeyValue
            ("dropped_attributes_count", 10, _UINT32, _ONE, ""),
            ("events", 11, _BYTES, _MANY, ""),  # raw Span.Event
            ("dropped_events_count", 12, _UINT32, _ONE, ""),
            ("links", 13, _BYTES, _MANY, ""),  # raw Span.Link
            ("dropped_links_count", 14, _UINT32, _ONE, ""),
            ("status", 15, _BYTES, _ONE, ""),  # raw Status
            ("flags", 16, _FIXED32, _ONE, ""),
        ],
    ),
    (
        "ScopeSpans",
        [
            ("scope", 1, _BYTES, _ONE, ""),
            ("spans", 2, _MSG, _MANY, "Span"),
            ("schema_url", 3, _STRING, _ONE, ""),
        ],
    ),
    (
        "ResourceSpans",
        [
            ("resource", 1, _BYTES, _ONE, ""),  # raw Resource
            ("scope_spans", 2, _MSG, _MANY, "ScopeSpans"),
            ("schema_url", 3, _STRING, _ONE, ""),
        ],
    ),
    ("ExportTraceServiceRequest", [("resource_spans", 1, _MSG, _MANY, "ResourceSpans")]),
]
_PACKAGE = "lightspan.otlp_shadow"


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="lightspan/otlp_shadow.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in _MESSAGES:
        msg = file.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    desc = pool.FindMessageTypeByName(f"{_PACKAGE}.ExportTraceServiceRequest")
    return message_factory.GetMessageClass(desc)


ShadowRequest = _build()
"""``ExportTraceServiceRequest`` with raw-bytes attributes, resource, status, events, links."""

_SCALARS = ("string_value", "int_value", "double_value", "bool_value")
_CACHE: dict[bytes, tuple[str, Any]] = {}
_CACHE_MAX = 1 << 16  # entries; cleared when full (cheap, and hot entries come right back)
_CACHE_ITEM_MAX = 256  # bytes: longer attributes (prompts, completions) rarely repeat


def decode_key_value(raw: bytes) -> KeyValue:
    """A raw ``KeyValue``, parsed (and validated) by the real OTLP class. Raises
    :class:`NestingTooDeep` when its value nests too deep, ``ValueError`` when malformed."""
    kv = KeyValue()
    try:
        kv.ParseFromString(raw)
    except DecodeError as exc:
        if raw_too_deep(raw):
            raise NestingTooDeep() from exc
        raise ValueError(f"malformed attribute ({len(raw)} bytes): {exc}") from exc
    return kv


# --------------------------------------------------------------------------- depth on the wire
#
# protobuf's parser refuses a message nested deeper than 100 levels with a DecodeError that does
# not say why. To reject a span for a too-deep value (as the Rust converter does) rather than the
# whole request for a "malformed" one, a failed parse is re-read here: the AnyValue structure
# only, in the order the Rust converter reads it, never deeper than MAX_NESTING_DEPTH + 1.


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


def _fields(buf: memoryview) -> Any:
    """(field number, bytes of a length-delimited value or ``None``) of a message."""
    pos, end = 0, len(buf)
    while pos < end:
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
        yield number, value


def _kv_value(buf: memoryview) -> memoryview | None:
    value, count = None, 0
    for number, v in _fields(buf):
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
    for number, v in _fields(buf):
        if 1 <= number <= 7:
            seen += 1
            if number in (5, 6):
                if v is None:
                    raise _Unscannable
                nested = (number, v)
    if seen > 1 or nested is None:
        if seen > 1:
            raise _Unscannable
        return False
    kind, body = nested
    for number, item in _fields(body):
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


def raw_too_deep(raw: bytes, attributes_field: int | None = None) -> bool:
    """Whether a raw ``KeyValue`` (or, with ``attributes_field``, a message whose attributes
    are that field: Resource 1, Event 3, Link 4) holds a value nested deeper than the limit,
    before anything malformed. Reads at most ``MAX_NESTING_DEPTH + 1`` levels."""
    buf = memoryview(raw)
    try:
        if attributes_field is None:
            kvs: Any = (buf,)
        else:
            kvs = [v for number, v in _fields(buf) if number == attributes_field]
        for kv in kvs:
            if kv is None:
                return False
            value = _kv_value(kv)
            if value is not None and _any_too_deep(value, 1):
                return True
    except _Unscannable:
        return False
    return False


def attributes_from_raw(raws: Any, slow: Any) -> dict[str, Any]:
    """Raw ``KeyValue`` bytes -> Span attributes. Scalar attributes come from the memo;
    others are decoded and handed to ``slow`` (``otlp.attributes_from_kvs``), which applies the
    flattening rules. Raises ``ValueError`` for a malformed attribute."""
    out: dict[str, Any] = {}
    cache = _CACHE
    for raw in raws:
        hit = cache.get(raw)
        if hit is not None:
            out[hit[0]] = hit[1]
            continue
        kv = decode_key_value(raw)
        value = kv.value
        kind = value.WhichOneof("value")
        if kind in _SCALARS:
            hit = (kv.key, getattr(value, kind))
            if len(raw) <= _CACHE_ITEM_MAX:
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[raw] = hit
            out[hit[0]] = hit[1]
        else:
            out.update(slow((kv,)))
    return out
