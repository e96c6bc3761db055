"""OTLP encoding of SDK spans straight to bytes, identical to the SDK's encoder's output.

Why not ``encode_spans(spans).SerializeToString()`` (the SDK's encoder, what the stock
``OTLPSpanExporter`` uses): it builds a protobuf object per span, attribute and value before
serializing them, ~30 us of CPU per span on these machines, which is more than recording the
span, and it runs in the workflow's process (the export thread shares the interpreter with the
event loop). Writing the wire format directly, with the resource, the scope and repeated
attributes (rollout and attempt ids, step kinds) encoded once and reused, costs a fraction of
that.

The output is byte for byte ``encode_spans(spans).SerializeToString()``: same grouping (by
resource, then scope, in order of first appearance), same field order, same defaults left out
(``tests/exporter/test_encode.py`` compares the bytes). A span with anything this encoder does
not write itself (a mapping, ``None`` or bytes attribute value, an integer outside int64, text
that is not UTF-8 encodable) is handed to the SDK's encoder, so the two never disagree on
what reaches the store.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from struct import Struct
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
)
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["encode_request"]

_CACHE_LIMIT = 4096
"""Encoded key/value pairs kept for reuse; the cache is emptied when it grows past this."""
_CACHE_MAX_TEXT = 200
"""Longer text values are encoded every time (so the cache stays within a few MB)."""

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_Q = Struct("<Q")
_KIND_TIMES = Struct("<BBBQBQ")  # kind (field 6), start (7, fixed64), end (8, fixed64)
_FLAGS = Struct("<BBI")  # flags (field 16, fixed32)
_DOUBLE = Struct("<Bd")  # AnyValue.double_value (field 4, double)
_FLAGS_LOCAL = _FLAGS.pack(0x85, 0x01, 0x100)  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_FLAGS_REMOTE = _FLAGS.pack(0x85, 0x01, 0x300)  # ... | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_SMALL = [bytes((i,)) for i in range(128)]
_UNSET = object()


class _Fallback(Exception):
    """This span needs the SDK's encoder."""


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int64(n: int) -> bytes:
    if not _I64_MIN <= n <= _I64_MAX:
        raise _Fallback
    return _varint(n if n >= 0 else n + (1 << 64))


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


def _key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` message (without its own tag)."""
    value_field = _field(b"\x12", _any_value(value))
    return _field(b"\x0a", key.encode()) + value_field if key else value_field


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message (without its own tag) for a scalar or a sequence of them."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _int64(value)
    if isinstance(value, float):
        return _DOUBLE.pack(0x21, value)
    if isinstance(value, tuple | list):
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any_value(v)) for v in value]))
    raise _Fallback  # None, bytes, mappings, other types: the SDK's encoder decides


class SpanEncoder:
    """Encodes batches of SDK spans into ``ExportTraceServiceRequest`` bytes (see the module doc).

    One per exporter: it keeps the encoded resources, scopes and key/value pairs it has seen
    (bounded; plain dicts, so two threads sharing it at worst encode a piece twice).
    """

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, Any], bytes] = {}
        self._resources: dict[Any, bytes] = {}
        self._scopes: dict[Any, bytes] = {}

    def encode_request(self, spans: Sequence[ReadableSpan]) -> bytes:
        """``encode_spans(spans).SerializeToString()``, faster."""
        groups: dict[Any, dict[Any, list[bytes]]] = {}
        last: tuple[Any, Any] = (_UNSET, _UNSET)
        encoded: list[bytes] = []
        for span in spans:
            resource = span.resource
            scope = span.instrumentation_scope or None
            # Grouped by equality like the SDK, but hashing a Resource serializes its
            # attributes: consecutive spans of the same objects skip the lookups.
            if resource is not last[0] or scope is not last[1]:
                encoded = groups.setdefault(resource, {}).setdefault(scope, [])
                last = (resource, scope)
            try:
                encoded.append(self._span(span))
            except (_Fallback, UnicodeEncodeError, struct.error):
                encoded.append(_field(b"\x12", _encode_span(span).SerializeToString()))
        out = []
        for resource, by_scope in groups.items():
            parts = [self._resource(resource)]
            for scope, encoded in by_scope.items():
                scope_parts = [self._scope(scope), *encoded]
                if scope is not None and scope.schema_url:
                    scope_parts.append(_field(b"\x1a", scope.schema_url.encode()))
                parts.append(_field(b"\x12", b"".join(scope_parts)))
            if resource.schema_url:
                parts.append(_field(b"\x1a", resource.schema_url.encode()))
            out.append(_field(b"\x0a", b"".join(parts)))
        return b"".join(out)

    # -- cached pieces -------------------------------------------------------------------------

    def _resource(self, resource: Any) -> bytes:
        """``ResourceSpans.resource`` (field 1), tag included."""
        found = self._resources.get(resource)
        if found is None:
            if len(self._resources) >= 64:
                self._resources.clear()
            found = _field(b"\x0a", _encode_resource(resource).SerializeToString())
            self._resources[resource] = found
        return found

    def _scope(self, scope: Any) -> bytes:
        """``ScopeSpans.scope`` (field 1), tag included."""
        found = self._scopes.get(scope)
        if found is None:
            if len(self._scopes) >= 64:
                self._scopes.clear()
            found = _field(b"\x0a", _encode_instrumentation_scope(scope).SerializeToString())
            self._scopes[scope] = found
        return found

    def _attributes(self, attributes: Any) -> list[bytes]:
        """``Span.attributes`` (field 9): pairs with a text or integer value are encoded once and
        reused (the rollout and attempt ids, step kinds and names repeat across spans)."""
        pairs = self._pairs
        out = []
        for key, value in attributes.items():
            t = type(value)
            # Not bool/float (True == 1 == 1.0 would share an entry), not long text (prompts
            # and completions would fill memory for nothing: they do not repeat).
            if t is int or (t is str and len(value) <= _CACHE_MAX_TEXT):
                found = pairs.get((key, value))
                if found is None:
                    if len(pairs) >= _CACHE_LIMIT:
                        pairs.clear()
                    found = pairs[(key, value)] = _field(b"\x4a", _key_value(key, value))
                out.append(found)
            else:
                out.append(_field(b"\x4a", _key_value(key, value)))
        return out

    # -- one span ------------------------------------------------------------------------------

    def _span(self, span: ReadableSpan) -> bytes:
        """``ScopeSpans.spans`` (field 2), tag included, or :class:`_Fallback`."""
        ctx = span.context
        parent = span.parent
        parts = [
            b"\x0a\x10",
            ctx.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            ctx.span_id.to_bytes(8, "big"),
        ]
        trace_state = ctx.trace_state
        if trace_state:
            parts.append(
                _field(b"\x1a", ",".join([f"{k}={v}" for k, v in trace_state.items()]).encode())
            )
        if parent is not None:
            parts.append(b"\x22\x08")
            parts.append(parent.span_id.to_bytes(8, "big"))
        name = span.name
        if name:
            parts.append(_field(b"\x2a", name.encode()))
        start, end = span.start_time, span.end_time
        if not start or not end:
            raise _Fallback  # an unset time is left out of the message, not written as 0
        parts.append(_KIND_TIMES.pack(0x30, span.kind.value + 1, 0x39, start, 0x41, end))
        attributes = span.attributes
        if attributes:
            parts += self._attributes(attributes)
        if span.dropped_attributes:
            parts.append(b"\x50" + _varint(span.dropped_attributes))
        for event in span.events:
            parts.append(_field(b"\x5a", self._event(event)))
        if span.dropped_events:
            parts.append(b"\x60" + _varint(span.dropped_events))
        for link in span.links:
            parts.append(_field(b"\x6a", self._link(link)))
        if span.dropped_links:
            parts.append(b"\x70" + _varint(span.dropped_links))
        status = span.status
        if status is not None:
            parts.append(_field(b"\x7a", _status(status)))
        parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
        return _field(b"\x12", b"".join(parts))

    def _event(self, event: Any) -> bytes:
        parts = []
        if event.timestamp:
            parts.append(b"\x09" + _Q.pack(event.timestamp))
        if event.name:
            parts.append(_field(b"\x12", event.name.encode()))
        if event.attributes:
            parts += [_field(b"\x1a", _key_value(k, v)) for k, v in event.attributes.items()]
        if event.dropped_attributes:
            parts.append(b"\x20" + _varint(event.dropped_attributes))
        return b"".join(parts)

    def _link(self, link: Any) -> bytes:
        ctx = link.context
        parts = [
            b"\x0a\x10",
            ctx.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            ctx.span_id.to_bytes(8, "big"),
        ]
        if link.attributes:
            parts += [_field(b"\x22", _key_value(k, v)) for k, v in link.attributes.items()]
        if link.dropped_attributes:
            parts.append(b"\x28" + _varint(link.dropped_attributes))
        parts.append(b"\x35" + (b"\x00\x03\x00\x00" if ctx.is_remote else b"\x00\x01\x00\x00"))
        return b"".join(parts)


def _status(status: Any) -> bytes:
    parts = []
    if status.description:
        parts.append(_field(b"\x12", status.description.encode()))
    code = status.status_code.value
    if code:
        parts.append(b"\x18" + _varint(code))
    return b"".join(parts)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """One-off encoding (no reuse across calls); exporters keep a :class:`SpanEncoder`."""
    return SpanEncoder().encode_request(spans)
