"""The Rust OTLP converter (``native/``) stores exactly what the Python converter stores.

``lightspan/store/intake/otlp.py`` is the specification. For every body here, including a few
thousand randomly built spans with every attribute kind, nesting, escapes, odd timestamps, trace states,
links, events and invalid ids, the Rust rows must carry the same columns and byte-for-byte the
same JSON document as ``SpanRow(dict)`` over the Python converter's dicts, and the same
rejections. Inputs whose conversion follows Python's own ``str()``/``int()`` are handed back to
Python (``None``), and the intake then uses the Python converter.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from lightspan.store.api import limits
from lightspan.store.backends.sqlite import SqliteLightningStore
from lightspan.store.intake import convert as conversion
from lightspan.store.intake import span_row
from lightspan.store.intake.convert import convert, native_rows
from lightspan.store.intake.ingest import ingest
from lightspan.store.intake.otlp import OtlpSpans, spans_from_protobuf
from lightspan.store.intake.span_row import SpanRow, group_rows
from tests.store.otlp_payloads import any_value, kvs, make_request
from tests.store.raw_otlp import RawRequest
from tests.store.test_fast_intake import FIXTURE_BODIES, FIXTURE_IDS, _rich_request

# Skipped only on a machine without cargo; with cargo, a missing module fails these tests.
native = pytest.mark.skipif(
    conversion._native_convert is None and shutil.which("cargo") is None,
    reason="no cargo on this machine: the Rust module is not built",
)

ROLLOUT, ATTEMPT, SEQ = (
    "agentlightning.rollout_id",
    "agentlightning.attempt_id",
    "agentlightning.span_sequence_id",
)


def test_the_rust_module_is_built_wherever_cargo_is() -> None:
    """CI has cargo (the README requires it): a broken build must fail here, not silently fall
    back to Python. Without cargo there is nothing to check (the Python converter is the
    intake)."""
    if shutil.which("cargo") is None:
        pytest.skip("no cargo on this machine: the Python converter is the intake")
    assert conversion._native_convert is not None, "pip install -e . did not build native/"


@native
def test_both_converters_use_the_same_depth_limit() -> None:
    from lightspan.store.intake import _otlp_native

    assert _otlp_native.MAX_NESTING_DEPTH == limits.MAX_NESTING_DEPTH == 32


# --------------------------------------------------------------------------- random spans

_TEXT = ["", "plain", 'quo"te', "back\\slash", "new\nline\ttab", "ctl\x01\x1f\x7f", "é✓🙂", "a=b,c"]


def _rand_scalar(rng: random.Random) -> object:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(_TEXT) + str(rng.randrange(1000))
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randrange(-(10**12), 10**12)])
    if kind == 3:
        return rng.choice(
            [0.0, -0.0, 0.1, 1e16, 1.5e-7, 1e300, float("nan"), float("inf"), rng.random()]
        )
    if kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(5)))
    return rng.uniform(-1e6, 1e6)


def _rand_value(rng: random.Random, depth: int = 0) -> AnyValue:
    v = AnyValue()
    kind = rng.randrange(10 if depth < 5 and rng.random() < 0.7 else 6)
    scalar = _rand_scalar(rng)
    if kind == 6:  # homogeneous list
        items = [_rand_scalar(rng) for _ in range(rng.randrange(4))]
        if items and rng.random() < 0.6:
            items = [type(items[0])(x) if not isinstance(x, bytes) else x for x in items[:1]] * 3
        for x in items:
            v.array_value.values.add().CopyFrom(any_value(x))
    elif kind == 7:  # mixed / nested list
        for _ in range(rng.randrange(4)):
            v.array_value.values.add().CopyFrom(_rand_value(rng, depth + 1))
    elif kind == 8:  # kvlist, with a repeated key sometimes
        keys = [rng.choice(["a", "b", "c.d", ""]) for _ in range(rng.randrange(4))]
        for k in keys:
            v.kvlist_value.values.add(key=k).value.CopyFrom(_rand_value(rng, depth + 1))
    elif kind == 9:  # no value at all
        pass
    else:
        v.CopyFrom(any_value(scalar))
    return v


def _rand_attrs(rng: random.Random, n: int) -> list[KeyValue]:
    keys = ["gen_ai.request.model", "k", "k.0", "dup", "dup", "x.y", "", "é"]
    return [
        KeyValue(key=rng.choice(keys) + str(rng.randrange(3)), value=_rand_value(rng))
        for _ in range(n)
    ]


def _rand_id(rng: random.Random, n: int) -> bytes:
    r = rng.random()
    if r < 0.03:
        return b""
    if r < 0.05:
        return bytes(n)
    if r < 0.07:
        return bytes(rng.randrange(256) for _ in range(n + 1))
    return bytes(rng.randrange(256) for _ in range(n))


def _rand_time(rng: random.Random) -> int:
    return rng.choice(
        [
            0,
            1,
            10**12,
            10**12 + 1,
            2**53 + 1,
            2**64 - 1,
            rng.randrange(2**64),
            1_764_117_105 * 10**9,
        ]
    )


def random_request(seed: int, spans: int = 40) -> bytes:
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    for _ in range(rng.randrange(1, 4)):
        rs = req.resource_spans.add()
        rs.schema_url = rng.choice(["", "https://opentelemetry.io/schemas/1.30.0"])
        res = {"service.name": "svc"}
        if rng.random() < 0.7:
            res[ROLLOUT] = f"ro-{rng.randrange(3)}"
        if rng.random() < 0.7:
            res[ATTEMPT] = f"at-{rng.randrange(3)}"
        if rng.random() < 0.2:
            res[SEQ] = rng.choice(["7", " 8 ", "-1", "x", 9, -2, True, 1.0])
        rs.resource.attributes.extend(kvs(res))
        rs.resource.attributes.extend(_rand_attrs(rng, rng.randrange(3)))
        for _ in range(rng.randrange(1, 3)):
            ss = rs.scope_spans.add()
            ss.scope.name = "scope"
            for _ in range(spans // 2):
                s = ss.spans.add()
                s.trace_id = _rand_id(rng, 16)
                s.span_id = _rand_id(rng, 8)
                if rng.random() < 0.6:
                    s.parent_span_id = _rand_id(rng, 8)
                s.name = rng.choice(_TEXT) + "span"
                s.flags = rng.choice([0, 0x100, 0x300, 0x200, 0x301])
                s.start_time_unix_nano = _rand_time(rng)
                s.end_time_unix_nano = _rand_time(rng)
                s.trace_state = rng.choice(["", "a=1,b=2", " a=1 , a=3,=x,y", "k=v=w"])
                s.attributes.extend(_rand_attrs(rng, rng.randrange(12)))
                if rng.random() < 0.3:
                    s.attributes.extend(kvs({ROLLOUT: f"ro-s{rng.randrange(2)}"}))
                if rng.random() < 0.1:
                    s.attributes.extend(kvs({ATTEMPT: ""}))
                if rng.random() < 0.2:
                    s.attributes.extend(kvs({SEQ: rng.choice(["12", "+3", "", "1.5", 4, 0])}))
                if rng.random() < 0.5:
                    s.status.code = rng.choice([0, 1, 2, 7])
                    s.status.message = rng.choice(["", "boom", "ünïcode"])
                for _ in range(rng.randrange(3)):
                    e = s.events.add()
                    e.name = rng.choice(_TEXT)
                    e.time_unix_nano = _rand_time(rng)
                    e.attributes.extend(_rand_attrs(rng, rng.randrange(3)))
                for _ in range(rng.randrange(3)):
                    link = s.links.add()
                    link.trace_id = _rand_id(rng, 16)
                    link.span_id = _rand_id(rng, 8)
                    link.trace_state = rng.choice(["", "x=1"])
                    link.flags = rng.choice([0, 0x300])
                    link.attributes.extend(_rand_attrs(rng, rng.randrange(2)))
    return req.SerializeToString()


# --------------------------------------------------------------------------- deep and wide values
#
# Built as raw bytes: protobuf's own classes refuse to build (or copy) values nested deeper than
# its recursion limit, and those are exactly the values the intake must reject without crashing.


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(number: int, body: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(body)) + body


def deep_value(levels: int, pattern: str = "k", leaf: bytes = b"\x0a\x01x") -> bytes:
    """A raw ``AnyValue`` nested ``levels`` deep (1: the leaf itself); ``pattern`` cycles
    through ``k`` (kvlist of one entry) and ``a`` (array of one item) from the inside out."""
    v = leaf
    for i in range(levels - 1):
        if pattern[i % len(pattern)] == "k":
            v = _ld(6, _ld(1, _ld(1, b"k") + _ld(2, v)))
        else:
            v = _ld(5, _ld(1, v))
    return v


def raw_kv(key: str, value: bytes) -> bytes:
    return _ld(1, key.encode()) + _ld(2, value)


def _rand_deep_value(rng: random.Random) -> bytes:
    """A value nested around the limit (or far past it), some with wide siblings."""
    limit = limits.MAX_NESTING_DEPTH
    levels = rng.choice([1, 2, limit - 1, limit, limit, limit + 1, limit + 1, limit + 2, 40, 300])
    pattern = rng.choice(["k", "a", "ka", "aak"])
    leaf = rng.choice([b"\x0a\x01x", b"\x18\x07", b"", _ld(5, b""), _ld(6, b"")])
    value = deep_value(levels, pattern, leaf)
    if rng.random() < 0.3:  # wide: siblings before the deep one, in a kvlist
        entries = b"".join(_ld(1, raw_kv(f"w{i}", b"\x0a\x01y")) for i in range(rng.randrange(50)))
        value = _ld(6, entries + _ld(1, raw_kv("deep", value)))
    return value


def random_deep_request(seed: int, spans: int = 12) -> bytes:
    """Spans whose span, resource, event or link attributes nest around the depth limit."""
    rng = random.Random(seed)
    req = RawRequest()
    for _ in range(rng.randrange(1, 3)):
        rs = req.resource_spans.add()
        res = kvs({"service.name": "svc", ROLLOUT: "ro-deep", ATTEMPT: "at-deep"})
        raw_res = b"".join(_ld(1, kv.SerializeToString()) for kv in res)
        if rng.random() < 0.15:
            raw_res += _ld(1, raw_kv("res.deep", _rand_deep_value(rng)))
        rs.resource = raw_res
        ss = rs.scope_spans.add()
        for _ in range(spans):
            s = ss.spans.add()
            s.trace_id = bytes(rng.randrange(1, 256) for _ in range(16))
            s.span_id = bytes(rng.randrange(1, 256) for _ in range(8))
            s.name = "deep"
            s.start_time_unix_nano = 1_764_117_105 * 10**9
            s.attributes.extend(kv.SerializeToString() for kv in kvs({"plain": "v", "n": 1}))
            for _ in range(rng.randrange(3)):
                s.attributes.append(raw_kv(rng.choice(["d", "e.f", "d"]), _rand_deep_value(rng)))
            if rng.random() < 0.3:
                if rng.random() < 0.5:  # no owner either: which reason wins must agree
                    s.attributes.append(raw_kv(ATTEMPT, b""))
            for _ in range(rng.randrange(3)):
                event = _ld(2, b"ev") + _ld(3, raw_kv("ok", b"\x0a\x01z"))
                if rng.random() < 0.4:
                    event += _ld(3, raw_kv("deep", _rand_deep_value(rng)))
                s.events.append(event)
            for _ in range(rng.randrange(2)):
                link = _ld(1, bytes(range(1, 17))) + _ld(2, bytes(range(1, 9)))
                if rng.random() < 0.4:
                    link += _ld(4, raw_kv("deep", _rand_deep_value(rng)))
                s.links.append(link)
    return req.SerializeToString()


# --------------------------------------------------------------------------- equivalence


def rows_from_protobuf(body: bytes) -> tuple[list[SpanRow], list] | None:
    """The Rust converter's rows and rejections, or ``None`` when it hands the body back."""
    out = native_rows(body)
    return None if out is None else (out.rows, out.rejected)


def _python_rows(body: bytes) -> tuple[list[SpanRow], OtlpSpans]:
    """The Python converter's result (the specification, and the intake's fallback)."""
    converted = spans_from_protobuf(body)
    return [SpanRow(dict(d)) for d in converted.spans], converted


_COLUMNS = (
    "rollout_id",
    "attempt_id",
    "span_id",
    "trace_id",
    "parent_id",
    "name",
    "start_time",
    "end_time",
    "status_code",
    "sequence_id",
    "sequence_id_pending",
)


def assert_same_rows(body: bytes) -> int:
    out = rows_from_protobuf(body)
    assert out is not None, conversion._native_convert and _punt(body)
    rows, rejected = out
    ref_rows, ref = _python_rows(body)
    want_groups = group_rows(ref_rows)  # before the ids are set below
    assert rejected == ref.rejected
    assert len(rows) == len(ref_rows)
    for got, want in zip(rows, ref_rows, strict=True):
        for col in _COLUMNS:
            g, w = getattr(got, col), getattr(want, col)
            assert g == w or (g != g and w != w), (col, g, w)
        got.sequence_id = want.sequence_id = 5
        assert got.doc() == want.doc()
        assert json.loads(got.doc()) == json.loads(want.doc()) or "NaN" in want.doc()
    # The rows per attempt the store's rules read: the Rust converter's, as group_rows makes them.
    groups = native_rows(body).groups  # type: ignore[union-attr]
    assert groups == want_groups
    assert list(groups.groups) == list(want_groups.groups)  # first-appearance order
    return len(rows)


def _punt(body: bytes) -> str | None:
    from lightspan.store.intake._otlp_native import punt_reason

    return punt_reason(body)


@native
@pytest.mark.parametrize("body", FIXTURE_BODIES, ids=FIXTURE_IDS)
def test_rust_rows_equal_python_rows(body: bytes) -> None:
    assert_same_rows(body)


@native
def test_rust_rows_equal_python_rows_on_random_spans() -> None:
    stored = punted = rejections = 0
    shapes: set[tuple[bool, bool]] = set()
    for seed in range(120):
        body = random_request(seed)
        if _punt(body) is not None:
            punted += 1
            continue
        stored += assert_same_rows(body)
        rejections += len(rows_from_protobuf(body)[1])
        groups = native_rows(body).groups  # type: ignore[union-attr]
        shapes.add((groups.clean, len(groups.groups) > 1))
    # The generator must mostly produce batches the Rust side converts, and real rows.
    assert punted < 40 and stored > 1500, (punted, stored)
    assert rejections > 100, rejections
    assert (True, True) in shapes, shapes  # several attempts in one batch


def wide_map_request(width: int, distinct: int, seed: int) -> bytes:
    """Spans with ``width`` attributes over ``distinct`` keys (so keys repeat on both sides of
    the Rust map's index threshold), and a kvlist value as wide."""
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(kvs({ROLLOUT: "ro-wide", ATTEMPT: "at-wide"}))
    ss = rs.scope_spans.add()
    for n in range(4):
        s = ss.spans.add()
        s.trace_id, s.span_id, s.name = bytes(range(1, 17)), bytes([n + 1] * 8), "wide"
        s.start_time_unix_nano, s.end_time_unix_nano = 10**18, 10**18 + 5
        keys = [f"k{rng.randrange(distinct)}" for _ in range(width)]
        s.attributes.extend(KeyValue(key=k, value=any_value(i)) for i, k in enumerate(keys))
        kv = s.attributes.add(key="wide.kvlist").value.kvlist_value
        for i, k in enumerate(keys):
            kv.values.add(key=k).value.CopyFrom(any_value(f"v{i}"))
    return req.SerializeToString()


@native
@pytest.mark.parametrize(
    "width, distinct", [(31, 31), (32, 20), (33, 33), (34, 30), (80, 45), (400, 150)]
)
def test_rust_rows_equal_python_rows_on_wide_maps_with_repeated_keys(
    width: int, distinct: int
) -> None:
    """The Rust map scans its keys up to 32 entries and indexes them beyond: a repeated key
    keeps its first place and takes its last value on either side, as a Python dict does."""
    for seed in range(3):
        body = wide_map_request(width, distinct, seed)
        assert _punt(body) is None
        assert assert_same_rows(body) == 4
    # And both are what a dict makes of them (first place, last value), not merely equal.
    rng = random.Random(0)
    want: dict[str, int] = {}
    for i in range(width):
        want[f"k{rng.randrange(distinct)}"] = i
    out = rows_from_protobuf(wide_map_request(width, distinct, 0))
    assert out is not None
    attrs = json.loads(out[0][0].doc())["attributes"]
    assert [(k, v) for k, v in attrs.items() if k.startswith("k")] == list(want.items())


@native
def test_rust_rows_and_rejections_equal_python_on_deep_and_wide_values() -> None:
    """Acceptance and rejection agree around the depth limit, in every place a value can be."""
    stored = rejected = 0
    reasons: set[str] = set()
    for seed in range(150):
        body = random_deep_request(seed)
        assert _punt(body) is None, seed
        stored += assert_same_rows(body)
        out = rows_from_protobuf(body)
        assert out is not None
        rejected += len(out[1])
        reasons |= {r.reason for r in out[1]}
    assert stored > 300 and rejected > 300, (stored, rejected)
    for place in ("span", "resource", "event", "link"):
        assert f"a {place} attribute value nests deeper than 32 levels (the limit)" in reasons


@native
@pytest.mark.parametrize("levels, pattern", [(15_000, "k"), (20_000, "a"), (33, "ka"), (32, "k")])
def test_the_limit_is_the_same_for_both_and_deep_values_do_not_crash(
    levels: int, pattern: str
) -> None:
    req, _ = make_request(2)
    body = req.SerializeToString()
    raw = RawRequest()
    raw.ParseFromString(body)
    raw.resource_spans[0].scope_spans[0].spans[0].attributes.append(
        raw_kv("deep", deep_value(levels, pattern))
    )
    body = raw.SerializeToString()
    assert_same_rows(body)
    rows, rejected = rows_from_protobuf(body)
    if levels <= limits.MAX_NESTING_DEPTH:
        assert len(rows) == 2 and not rejected
    else:
        assert len(rows) == 1
        assert [r.reason for r in rejected] == [
            "a span attribute value nests deeper than 32 levels (the limit)"
        ]


@native
@pytest.mark.parametrize(
    "attrs, why",
    [
        ({ROLLOUT: 12}, "non-string rollout/attempt id"),
        ({SEQ: "1_000"}, "sequence id string needs Python's int()"),
        ({SEQ: "١٢"}, "sequence id string needs Python's int()"),
    ],
)
def test_values_that_follow_python_conversions_go_to_python(attrs: dict, why: str) -> None:
    req, _ = make_request(2, span_attrs=attrs)
    body = req.SerializeToString()
    assert _punt(body) == why
    assert rows_from_protobuf(body) is None  # the Python converter takes it
    converted = convert(body)
    assert len(converted.rows) == 2


def _raw_with(edit) -> bytes:
    """A 2-span request, as a RawRequest (raw attributes, resource, status), edited."""
    req, _ = make_request(2)
    raw = RawRequest()
    raw.ParseFromString(req.SerializeToString())
    edit(raw.resource_spans[0], raw.resource_spans[0].scope_spans[0].spans[0])
    return raw.SerializeToString()


def _append_attr(raw: bytes):
    return lambda rs, s: s.attributes.append(raw)


@native
@pytest.mark.parametrize(
    "edit, why",
    [
        (
            _append_attr(raw_kv("two", _ld(1, b"a") + b"\x18\x05")),
            "AnyValue with more than one value",
        ),
        (
            _append_attr(_ld(1, b"k") + _ld(2, _ld(1, b"a")) + _ld(2, _ld(1, b"b"))),
            "KeyValue with its value twice",
        ),
        (_append_attr(raw_kv(SEQ, b"\x0a\x1499999999999999999999")), "sequence id beyond 64 bits"),
        (lambda rs, s: setattr(s, "trace_state", "k=v\u00e9"), "non-ASCII trace_state"),
    ],
    ids=["anyvalue-twice", "kv-value-twice", "seq-64-bits", "trace-state"],
)
def test_every_hand_back_reason_goes_to_python_and_python_converts_it(edit, why: str) -> None:
    body = _raw_with(edit)
    assert _punt(body) == why
    assert rows_from_protobuf(body) is None  # the Python converter takes it
    converted = convert(body)
    assert len(converted.rows) + len(converted.rejected) == 2


def _raw_body(extra_resource_spans: bytes = b"", extra_span: bytes = b"") -> bytes:
    """A 1-span request encoded by hand, with raw fields appended to its ResourceSpans or its
    Span (what protobuf's encoder never writes: a singular message sent twice)."""
    req, _ = make_request(1)
    rs = req.resource_spans[0]
    span = rs.scope_spans[0].spans[0]
    span.status.code = 2
    scope = _ld(2, span.SerializeToString() + extra_span)
    resource_spans = _ld(1, rs.resource.SerializeToString()) + _ld(2, scope)
    return _ld(1, resource_spans + extra_resource_spans)


@native
@pytest.mark.parametrize(
    "extra, why",
    [
        ({"extra_span": _ld(15, _ld(2, b"again"))}, "Span.status twice"),
        ({"extra_resource_spans": _ld(1, b"")}, "ResourceSpans.resource twice"),
    ],
    ids=["status-twice", "resource-twice"],
)
def test_singular_messages_sent_twice_go_to_python(extra: dict, why: str) -> None:
    assert _punt(_raw_body()) is None
    body = _raw_body(**extra)
    assert _punt(body) == why
    assert rows_from_protobuf(body) is None
    converted = convert(body)
    assert len(converted.rows) + len(converted.rejected) == 1


@native
def test_undecodable_bodies_go_to_the_python_parser_for_its_error() -> None:
    assert rows_from_protobuf(b"\xff\xff\xff") is None
    req, _ = make_request(1)
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(
        key="bad"
    ).value.string_value = "PLACEHOLDER"
    body = req.SerializeToString().replace(b"PLACEHOLDER", b"\xff\xfe\xfdCEHOLDER")
    assert rows_from_protobuf(body) is None


@native
def test_the_switch_turns_the_rust_converter_off(monkeypatch: pytest.MonkeyPatch) -> None:
    body = make_request(3)[0].SerializeToString()
    assert rows_from_protobuf(body) is not None
    monkeypatch.setenv(conversion.NATIVE_INTAKE_ENV, "0")
    assert not conversion.native_intake()
    assert rows_from_protobuf(body) is None
    assert len(convert(body).rows) == 3  # by the Python converter


@native
async def test_sqlite_stores_the_same_documents_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = [_rich_request(), *(random_request(s, spans=20) for s in range(10))]
    docs = []
    for mode in ("1", "0"):
        monkeypatch.setenv(conversion.NATIVE_INTAKE_ENV, mode)
        store = SqliteLightningStore(tmp_path / f"native-{mode}.db")
        await store.start()
        try:
            for body in bodies:
                native = rows_from_protobuf(body) is not None
                assert native == (mode == "1" and _punt(body) is None)
                await ingest(store, convert(body))
            rollouts = ["ro-test", *(f"ro-{i}" for i in range(3)), "ro-s0", "ro-s1"]
            docs.append([(await store.query_spans_json(r))[0] for r in rollouts])
        finally:
            await store.close()
    assert docs[0] == docs[1]
    assert sum(len(d) for d in docs[0]) > 50


@native
def test_rust_chunk_documents_equal_the_python_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = rows_from_protobuf(_rich_request())[0]
    rows += rows_from_protobuf(make_request(3, span_attrs={SEQ: "9"})[0].SerializeToString())[0]
    assert any(r.sequence_id_pending for r in rows) and not all(r.sequence_id_pending for r in rows)
    for k, r in enumerate(rows):
        if r.sequence_id_pending:
            r.sequence_id = 1000 + k
    native = span_row.chunk_docs(rows)
    seqs = [r.sequence_id for r in rows]
    assert native == (
        b"\n".join(r.doc_bytes() for r in rows),
        min(seqs),
        max(seqs),
        seqs == sorted(seqs),
    )
    assert native[3] is False  # the carried id 9 comes after issued ids in the 1000s
    assert span_row.chunk_docs(rows[-1:])[1:] == (9, 9, True)
    monkeypatch.setattr(span_row, "_native_chunk_docs", None)
    assert span_row.chunk_docs(rows) == native


@native
def test_a_sequence_id_beyond_64_bits_takes_the_python_join() -> None:
    rows = rows_from_protobuf(make_request(2, span_attrs={SEQ: "9"})[0].SerializeToString())[0]
    rows[1].sequence_id = 2**70
    docs, lo, hi, ascending = span_row.chunk_docs(rows)
    assert (lo, hi, ascending) == (9, 2**70, True)
    assert docs == b"\n".join(r.doc_bytes() for r in rows)


@native
def test_the_bodies_written_for_bench_convert_are_what_the_benchmark_converts(
    tmp_path: Path,
) -> None:
    """`otlp_convert.py --write-bodies` (native/README.md): two realistic 512-span requests, an
    Agent Lightning-shaped one (a resource per span) and one of ours, that the Rust converter
    takes and converts like the Python one."""
    repo = Path(__file__).resolve().parents[2]
    script = repo / "benchmarks" / "otlp_convert.py"
    subprocess.run(
        [sys.executable, str(script), "--write-bodies", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    resources = []
    for name in ("body0.bin", "body1.bin"):
        body = (tmp_path / name).read_bytes()
        request = ExportTraceServiceRequest.FromString(body)
        resources.append(len(request.resource_spans))
        rows = native_rows(body)
        assert rows is not None and len(rows.rows) == 512 and not rows.rejected
        python = rows_from_protobuf(body)[0]
        assert [r.doc_bytes() for r in rows.rows] == [r.doc_bytes() for r in python]
    assert resources == [512, 1]


def _unclean_request() -> bytes:
    """One attempt's spans with one of them twice, a second attempt of the same rollout whose
    spans carry sequence ids beside spans that ask for one, and spans that name no rollout."""
    req, _ = make_request(4, rollout_id="ro-u", attempt_id="at-1")
    spans = req.resource_spans[0].scope_spans[0].spans
    spans.add().CopyFrom(spans[1])  # the same span id twice in the batch
    second, _ = make_request(3, rollout_id="ro-u", attempt_id="at-2")
    carried, _ = make_request(2, rollout_id="ro-u", attempt_id="at-2", span_attrs={SEQ: "40"})
    no_owner, _ = make_request(2, rollout_id=None)
    for part in (second, carried, no_owner):
        req.resource_spans.extend(part.resource_spans)
    return req.SerializeToString()


@native
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_batch_with_a_span_twice_and_spans_without_owner_is_sorted_out_either_way(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Rust converter's grouping says the batch is not clean; the store then sorts it out
    as it does rows grouped in Python: the same counts, the same stored documents."""
    from lightspan.store.backends.memory import InMemoryLightningStore

    body = _unclean_request()
    groups = native_rows(body).groups  # type: ignore[union-attr]
    assert groups is not None and not groups.clean
    assert groups.groups[("ro-u", "at-2")].pending == 3
    assert groups.groups[("ro-u", "at-2")].max_carried == 40
    results, docs = [], []
    for mode in ("1", "0"):
        monkeypatch.setenv(conversion.NATIVE_INTAKE_ENV, mode)
        store = (
            SqliteLightningStore(tmp_path / f"u{mode}.db")
            if backend == "sqlite"
            else InMemoryLightningStore()
        )
        await store.start()
        try:
            assert (convert(body).groups is not None) == (mode == "1")
            got = await ingest(store, convert(body))
            results.append((got.received, got.stored, got.duplicates, got.rejected))
            docs.append((await store.query_spans_json("ro-u"))[0])
        finally:
            await store.close()
    assert results[0] == results[1] == (12, 9, 1, 2)
    assert docs[0] == docs[1]
    seqs = sorted(json.loads(d)["sequence_id"] for d in docs[0])
    # Carried ids move the rollout's counter up; the 7 spans that asked get the next ones.
    assert seqs == [40, 40, *range(41, 48)]
