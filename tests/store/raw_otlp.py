"""Test helper: OTLP export bodies holding values protobuf's own classes refuse to build.

A message with OTLP trace.proto's field numbers and wire types, except that each attribute
(``KeyValue``), the resource, status, events and links are raw bytes, so tests can put a value
nested 15,000 levels deep (or malformed on purpose) into an otherwise ordinary request. It
*encodes* test inputs only; the store parses bodies with the real OTLP classes (``otlp.py``) or
the Rust converter.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["RawRequest"]

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
_PACKAGE = "lightspan.tests.otlp_raw"


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="lightspan/tests/otlp_raw.proto", package=_PACKAGE, syntax="proto3"
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


RawRequest = _build()
"""``ExportTraceServiceRequest`` with raw-bytes attributes, resource, status, events, links."""
