"""The specification of how OTLP spans become Agent Lightning spans (the Python converter).

Everything reaching the store's intake is an OTLP/protobuf body (OTLP/JSON is parsed to protobuf
first, the in-process exporter hands over the bytes it encodes), and ``convert.py`` turns it into
rows: by the Rust converter (``native/``) when it is built, else by this module, which it must
match byte for byte (``tests/store/test_native_intake.py``). Both must store exactly what Agent
Lightning v0.3 stores
(``agentlightning.utils.otlp.spans_from_proto`` and ``Span.from_opentelemetry``), or training
code that reads spans back would see different shapes depending on how they travelled.

The output is plain ``dict`` objects in the Span JSON shape (``Span.model_dump(mode="json")``),
not pydantic models: ingestion is the store's hot path and building models costs more than
decoding the protobuf. ``sequence_id`` is ``None`` when the span did not carry one: the store
issues it. Callers that want models call ``Span.model_validate``.

Conventions, as in Agent Lightning v0.3 unless noted:

* A span belongs to a rollout through ``agentlightning.rollout_id`` / ``agentlightning.attempt_id``
  (and optionally ``agentlightning.span_sequence_id``), read from the span's attributes first, then
  its resource's. Spans without both are *rejected* with a reason (the reference drops them
  silently); so are spans with malformed trace/span ids.
* Times are float seconds (an integer above 1e12 is nanoseconds); 0 means "not set" -> ``None``.
* Attribute values: str/bool/int/float as is, homogeneous arrays of those as lists, bytes as hex.
  Nested values (kvlist, arrays of arrays or mixed arrays) are flattened into dotted keys
  (``k.sub``, ``k.0``) the way Agent Lightning's ``flatten_attributes`` does, because a Span's
  attribute values must be primitives or lists of primitives. Empty values are dropped.
* Deliberate improvements over the reference's OTLP path, so both of our paths agree with the
  reference's in-process path (``Span.from_opentelemetry``): ``parent`` is filled from
  ``parent_span_id`` (with ``is_remote`` from the OTLP span flags), and W3C ``trace_state``
  strings are parsed into dicts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from lightspan.semconv import ATTEMPT_ID as ATTEMPT_ID_KEY
from lightspan.semconv import ROLLOUT_ID as ROLLOUT_ID_KEY
from lightspan.semconv import SPAN_SEQUENCE_ID as SEQUENCE_ID_KEY
from lightspan.store.api.limits import MAX_NESTING_DEPTH, BodyTooDeep, loads_bounded
from lightspan.store.intake.otlp_depth import DeepMarks, NestingTooDeep, cut_too_deep

__all__ = [
    "ATTEMPT_ID_KEY",
    "ROLLOUT_ID_KEY",
    "SEQUENCE_ID_KEY",
    "NestingTooDeep",
    "OtlpDecodeError",
    "OtlpSpans",
    "RejectedSpan",
    "any_value",
    "attributes_from_kvs",
    "convert_timestamp",
    "decode_export_request",
    "parse_trace_state",
    "request_from_json",
    "spans_from_protobuf",
    "spans_from_request",
]


_STATUS_CODES = ("UNSET", "OK", "ERROR")
_HAS_IS_REMOTE = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_ZERO_16 = bytes(16)
_ZERO_8 = bytes(8)


class OtlpDecodeError(ValueError):
    """An OTLP request body is not a valid ExportTraceServiceRequest; the message says why."""


@dataclass(slots=True)
class RejectedSpan:
    """A span that cannot be stored, with the reason (reported in OTLP ``partial_success``)."""

    span_id: str
    name: str
    reason: str


@dataclass(slots=True)
class OtlpSpans:
    """The spans of one export request: those that can be stored and those that cannot."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[RejectedSpan] = field(default_factory=list)

    def error_message(self, limit: int = 5) -> str:
        """A one-line summary of the rejections (for ``partial_success.error_message``)."""
        if not self.rejected:
            return ""
        counts: dict[str, int] = {}
        for r in self.rejected:
            counts[r.reason] = counts.get(r.reason, 0) + 1
        parts = [f"{n} span(s): {reason}" for reason, n in list(counts.items())[:limit]]
        more = len(counts) - limit
        if more > 0:
            parts.append(f"and {more} other reason(s)")
        return f"rejected {len(self.rejected)} span(s): " + "; ".join(parts)


# --------------------------------------------------------------------------- values


def convert_timestamp(value: int | float | None) -> float | None:
    """Seconds since the epoch: ``None``/0 -> ``None``; above 1e12 is nanoseconds."""
    if not value:
        return None
    return value / 1_000_000_000 if value > 1e12 else float(value)


def _primitive_kind(v: Any) -> type:
    return bool if isinstance(v, bool) else type(v)


def _flatten_into(out: dict[str, Any], key: str, value: Any) -> None:
    """Store ``value`` at ``key``, flattening dicts and non-homogeneous lists into dotted keys."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten_into(out, f"{key}.{k}", v)
    elif isinstance(value, list):
        if not value:
            out[key] = []
            return
        kinds = {_primitive_kind(v) for v in value}
        if len(kinds) == 1 and next(iter(kinds)) in (str, bool, int, float):
            out[key] = value
            return
        for i, v in enumerate(value):
            _flatten_into(out, f"{key}.{i}", v)
    elif value is not None:
        out[key] = value


def too_deep_reason(place: str) -> str:
    """The rejection reason for a span with a value nested deeper than the limit; ``place`` is
    ``span``, ``resource``, ``event`` or ``link``. ``native/src/conversion.rs`` writes the same."""
    return f"a {place} attribute value nests deeper than {MAX_NESTING_DEPTH} levels (the limit)"


def any_value(value: AnyValue, level: int = 1) -> Any:
    """OTLP ``AnyValue`` at nesting ``level`` (1: an attribute's own value) -> Python (nested
    structures kept; see :func:`attributes_from_kvs`). Raises :class:`NestingTooDeep` past
    :data:`~lightspan.store.api.limits.MAX_NESTING_DEPTH`."""
    if level > MAX_NESTING_DEPTH:
        raise NestingTooDeep(level)
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [any_value(v, level + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {
            kv.key: any_value(kv.value, level + 1) if kv.HasField("value") else None
            for kv in value.kvlist_value.values
        }
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return None


def attributes_from_kvs(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP ``KeyValue`` list -> Span attributes (primitives or lists of primitives).
    Raises :class:`NestingTooDeep` for a value nested deeper than the limit."""
    out: dict[str, Any] = {}
    for kv in kvs:
        value = kv.value
        kind = value.WhichOneof("value")
        # Fast path for the common scalar kinds; everything else goes through flattening.
        if kind == "string_value":
            out[kv.key] = value.string_value
        elif kind == "int_value":
            out[kv.key] = value.int_value
        elif kind == "double_value":
            out[kv.key] = value.double_value
        elif kind == "bool_value":
            out[kv.key] = value.bool_value
        elif kind is not None:
            _flatten_into(out, kv.key, any_value(value))
    return out


def parse_trace_state(value: str) -> dict[str, str]:
    """W3C ``tracestate`` header value (``k1=v1,k2=v2``) -> dict; malformed members are skipped."""
    out: dict[str, str] = {}
    if not value:
        return out
    for member in value.split(","):
        key, sep, val = member.strip().partition("=")
        if sep and key:
            out[key] = val
    return out


def _context(trace_id: str, span_id: str, is_remote: bool, trace_state: dict[str, str]) -> dict:
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "is_remote": is_remote,
        "trace_state": trace_state,
    }


def _sequence_id(raw: Any) -> int | None:
    """An explicit sequence id, or ``None`` (the store issues one) when absent or invalid."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = int(str(raw).strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _owner_problem(rollout: Any, attempt: Any) -> str | None:
    if rollout is None or rollout == "":
        if attempt is None or attempt == "":
            return f"missing {ROLLOUT_ID_KEY} and {ATTEMPT_ID_KEY}"
        return f"missing {ROLLOUT_ID_KEY}"
    if attempt is None or attempt == "":
        return f"missing {ATTEMPT_ID_KEY}"
    return None


# --------------------------------------------------------------------------- OTLP protobuf


def decode_export_request(body: bytes) -> ExportTraceServiceRequest:
    """Parse a protobuf body; an empty body is an empty request (as OTLP allows)."""
    request = ExportTraceServiceRequest()
    if body:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpDecodeError(
                f"body is not a protobuf ExportTraceServiceRequest ({len(body)} bytes): {exc}"
            ) from exc
    return request


_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids_to_base64(node: Any, path: str) -> None:
    """OTLP/JSON carries ids as hex; protobuf's JSON mapping expects base64 for bytes fields."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                if value == "":
                    continue
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError as exc:
                    raise OtlpDecodeError(
                        f"{path}.{key}: {value!r} is not a hex id (OTLP/JSON ids are hex)"
                    ) from exc
            else:
                _hex_ids_to_base64(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _hex_ids_to_base64(item, f"{path}[{i}]")


def request_from_json(body: bytes | str | Mapping[str, Any]) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON body (hex ids, camelCase or snake_case field names)."""
    try:
        if isinstance(body, Mapping):
            data: Any = loads_bounded(json.dumps(body))
        else:
            if not body:
                return ExportTraceServiceRequest()
            data = loads_bounded(body)
    except BodyTooDeep as exc:
        raise OtlpDecodeError(str(exc)) from exc
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise OtlpDecodeError(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise OtlpDecodeError(
            f"OTLP/JSON body must be an object with resourceSpans, got {type(data).__name__}"
        )
    _hex_ids_to_base64(data, "$")
    try:
        return json_format.ParseDict(data, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, DecodeError) as exc:
        if "too deep" in str(exc):
            # protobuf's JSON parser stops at 100 nested messages (33 kvlist levels in a span):
            # unlike OTLP/protobuf, the whole request is refused, with this reason.
            raise OtlpDecodeError(
                "body is not an OTLP/JSON ExportTraceServiceRequest: an attribute value nests "
                f"deeper than {MAX_NESTING_DEPTH} levels (the limit)"
            ) from exc
        raise OtlpDecodeError(f"body is not an OTLP/JSON ExportTraceServiceRequest: {exc}") from exc


def _events(events: Iterable[ProtoSpan.Event]) -> list[dict[str, Any]]:
    return [
        {
            "name": e.name,
            "attributes": attributes_from_kvs(e.attributes),
            "timestamp": convert_timestamp(e.time_unix_nano),
        }
        for e in events
    ]


def _links(span_links: Iterable[ProtoSpan.Link]) -> list[dict[str, Any]]:
    links = []
    for link in span_links:
        attrs = attributes_from_kvs(link.attributes)
        flags = link.flags
        links.append(
            {
                "context": _context(
                    link.trace_id.hex().rjust(32, "0"),
                    link.span_id.hex().rjust(16, "0"),
                    bool(flags & _HAS_IS_REMOTE and flags & _IS_REMOTE),
                    parse_trace_state(link.trace_state),
                ),
                "attributes": attrs or None,
            }
        )
    return links


def spans_from_request(request: ExportTraceServiceRequest) -> OtlpSpans:
    """OTLP export request -> Span dicts (``sequence_id`` ``None`` when the span has none)."""
    return _convert(request, {})


def spans_from_protobuf(body: bytes) -> OtlpSpans:
    """An OTLP/protobuf export body -> Span dicts and rejections. A value nested deeper than the
    limit rejects its span only, even where protobuf's parser refuses the whole body (see
    ``otlp_depth.py``). Raises :class:`OtlpDecodeError` for a malformed body."""
    try:
        return _convert(decode_export_request(body), {})
    except OtlpDecodeError:
        cut = cut_too_deep(body)
        if cut is None:
            raise
    return _convert(decode_export_request(cut[0]), cut[1])


def _status_dict(code: int, message: str) -> dict[str, Any]:
    return {
        "status_code": _STATUS_CODES[code] if 0 <= code < 3 else "UNSET",
        "description": message or None,
    }


def _convert(request: ExportTraceServiceRequest, deep: DeepMarks) -> OtlpSpans:
    """The conversion loop. ``deep``: where ``otlp_depth.cut_too_deep`` cut too-deep values out
    of the body (their spans are rejected, in the order the Rust converter finds them)."""
    result = OtlpSpans()
    spans = result.spans
    for r, resource_spans in enumerate(request.resource_spans):
        try:
            if (r,) in deep:
                raise NestingTooDeep
            resource_attrs = attributes_from_kvs(resource_spans.resource.attributes)
        except NestingTooDeep:
            # Every span of this resource carries the value: each is rejected.
            reason = too_deep_reason("resource")
            result.rejected.extend(
                RejectedSpan(ps.span_id.hex(), ps.name, reason)
                for scope_spans in resource_spans.scope_spans
                for ps in scope_spans.spans
            )
            continue
        res_rollout = resource_attrs.get(ROLLOUT_ID_KEY)
        res_attempt = resource_attrs.get(ATTEMPT_ID_KEY)
        res_seq = resource_attrs.get(SEQUENCE_ID_KEY)
        # Shared by every span of this resource, as in the reference (one object per resource).
        resource = {"attributes": resource_attrs, "schema_url": resource_spans.schema_url or ""}
        # The hot loop: helpers (_ids, _hex_id, convert_timestamp, _context, ...) inlined.
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            for i, ps in enumerate(scope_spans.spans):
                cut = deep.get((r, s, i)) if deep else None
                try:
                    attrs = attributes_from_kvs(ps.attributes)
                    if cut == "span":
                        raise NestingTooDeep
                except NestingTooDeep:
                    reason = too_deep_reason("span")
                    result.rejected.append(RejectedSpan(ps.span_id.hex(), ps.name, reason))
                    continue
                rollout = attrs.get(ROLLOUT_ID_KEY)
                if rollout is None:
                    rollout = res_rollout
                attempt = attrs.get(ATTEMPT_ID_KEY)
                if attempt is None:
                    attempt = res_attempt
                seq = attrs.get(SEQUENCE_ID_KEY)
                if seq is None:
                    seq = res_seq
                raw_trace, raw_span, raw_parent = ps.trace_id, ps.span_id, ps.parent_span_id
                trace_id = (
                    raw_trace.hex() if len(raw_trace) == 16 and raw_trace != _ZERO_16 else None
                )
                span_id = raw_span.hex() if len(raw_span) == 8 and raw_span != _ZERO_8 else None
                parent_id = (
                    raw_parent.hex()
                    if raw_parent and len(raw_parent) == 8 and raw_parent != _ZERO_8
                    else None
                )
                problem = None
                if rollout is None or rollout == "" or attempt is None or attempt == "":
                    problem = _owner_problem(rollout, attempt)
                elif trace_id is None:
                    problem = f"invalid trace_id {raw_trace.hex()!r} (need 16 non-zero bytes)"
                elif span_id is None:
                    problem = f"invalid span_id {raw_span.hex()!r} (need 8 non-zero bytes)"
                elif raw_parent and parent_id is None:
                    problem = f"invalid parent_span_id {raw_parent.hex()!r} (need 8 bytes)"
                if problem is not None:
                    result.rejected.append(RejectedSpan(raw_span.hex(), ps.name, problem))
                    continue
                status = _status_dict(ps.status.code, ps.status.message)
                place = "event"
                try:
                    # Events before links, in the Rust converter's order: the first problem
                    # found is the same.
                    event_dicts = _events(ps.events) if ps.events else []
                    if cut == "event":
                        raise NestingTooDeep
                    place = "link"
                    link_dicts = _links(ps.links) if ps.links else []
                    if cut == "link":
                        raise NestingTooDeep
                except NestingTooDeep:
                    result.rejected.append(RejectedSpan(span_id, ps.name, too_deep_reason(place)))
                    continue
                raw_state = ps.trace_state
                start, end = ps.start_time_unix_nano, ps.end_time_unix_nano
                spans.append(
                    {
                        "rollout_id": str(rollout),
                        "attempt_id": str(attempt),
                        "sequence_id": None if seq is None else _sequence_id(seq),
                        "trace_id": trace_id,
                        "span_id": span_id,
                        "parent_id": parent_id,
                        "name": ps.name,
                        "status": dict(status),
                        "attributes": attrs,
                        "events": event_dicts,
                        "links": link_dicts,
                        "start_time": (
                            (start / 1_000_000_000 if start > 1e12 else float(start))
                            if start
                            else None
                        ),
                        "end_time": (
                            (end / 1_000_000_000 if end > 1e12 else float(end)) if end else None
                        ),
                        "context": {
                            "trace_id": trace_id,
                            "span_id": span_id,
                            "is_remote": False,
                            "trace_state": parse_trace_state(raw_state) if raw_state else {},
                        },
                        "parent": (
                            {
                                "trace_id": trace_id,
                                "span_id": parent_id,
                                "is_remote": bool(
                                    ps.flags & _HAS_IS_REMOTE and ps.flags & _IS_REMOTE
                                ),
                                "trace_state": {},
                            }
                            if parent_id
                            else None
                        ),
                        "resource": resource,
                    }
                )
    return result
