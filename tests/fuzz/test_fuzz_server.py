"""Fuzz a real ``lightspan store serve`` (SQLite) with valid-looking and broken input.

A seeded mutator (no extra dependency; a failing case is replayed from its seed and index):
OTLP/protobuf and OTLP/JSON export requests with deep, wide, huge, empty, invalid-UTF-8 and
out-of-range values, sent over OTLP/HTTP, gzip and OTLP/gRPC, then byte-level mutations of
them; and REST bodies for every endpoint. After every case: no 5xx (or gRPC INTERNAL/UNKNOWN/
UNAVAILABLE), the process alive; every 25 cases and at the end: the data stored before the
fuzzing unchanged and the server's RSS within a bound.

Bounded by ``FuzzBudget`` (tests/fixtures/fuzz.py): ~12 s per test in CI, ``--fuzz-long`` for
20,000 cases per test.
"""

from __future__ import annotations

import gzip
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from lightspan.store.api.limits import MAX_NESTING_DEPTH
from tests.fixtures.fuzz import FuzzBudget
from tests.store.otlp_payloads import kvs, make_request
from tests.store.raw_otlp import RawRequest
from tests.store.servers import StoreProcess
from tests.store.test_native_intake import _ld, _varint, deep_value, raw_kv

MAX_BYTES = 1_000_000
RSS_GROWTH_LIMIT_MB = 400  # over the server's RSS after the baseline data is in
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
GRPC_OK = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
ROLLOUT, ATTEMPT = "agentlightning.rollout_id", "agentlightning.attempt_id"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Target:
    """The server, a client for it, and the data stored before fuzzing."""

    def __init__(self, server: StoreProcess) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.address, timeout=60)
        self.channel = grpc.insecure_channel(
            server.grpc_address, options=[("grpc.max_send_message_length", 8 * MAX_BYTES)]
        )
        self.export = self.channel.unary_unary(
            EXPORT,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        r = self.http.post("/v1/agl/rollouts", json={"input": {"task": "baseline"}})
        assert r.status_code == 201
        self.rid, self.aid = r.json()["rollout_id"], r.json()["attempt"]["attempt_id"]
        req, _ = make_request(20, rollout_id=self.rid, attempt_id=self.aid)
        r = self.http.post(
            "/v1/traces",
            content=req.SerializeToString(),
            headers={"content-type": "application/x-protobuf"},
        )
        assert r.status_code == 200
        # Fuzz spans go to a rollout of their own, never the baseline's.
        r = self.http.post("/v1/agl/rollouts", json={"input": "fuzz"})
        self.fuzz_rid, self.fuzz_aid = r.json()["rollout_id"], r.json()["attempt"]["attempt_id"]
        self.baseline = self.snapshot()
        assert len(self.baseline[0]["items"]) == 20
        self.rss0 = rss_mb(self.pid)

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def snapshot(self) -> tuple[dict, dict]:
        spans = self.http.get("/v1/agl/spans", params={"rollout_id": self.rid}).json()
        rollout = self.http.get(f"/v1/agl/rollouts/{self.rid}").json()
        return spans, rollout

    def check(self, what: str, full: bool) -> None:
        proc = self.server.proc
        assert proc is not None and proc.poll() is None, (what, self.server.log()[-3000:])
        if full:
            assert self.snapshot() == self.baseline, what
            grown = rss_mb(self.pid) - self.rss0
            assert grown < RSS_GROWTH_LIMIT_MB, (what, f"RSS grew by {grown:.0f} MB")

    def close(self) -> None:
        self.http.close()
        self.channel.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    server = StoreProcess(
        "sqlite", str(db), extra_args=("--max-request-bytes", str(MAX_BYTES))
    ).start()
    t = Target(server)
    yield t
    t.close()
    assert server.stop() == 0, server.log()[-3000:]


def run(budget: FuzzBudget, target: Target, name: str, case: Callable[[random.Random], str]):
    """Run ``case`` (which sends one request and checks its answer) until the budget is spent."""
    deadline = time.monotonic() + budget.seconds
    done = 0
    for i in range(budget.cases):
        if time.monotonic() > deadline:
            break
        rng = random.Random(f"{budget.seed}-{name}-{i}")
        what = case(rng)
        done += 1
        target.check(f"{name} case {i} ({what})", full=i % 25 == 24)
    target.check(f"{name} end", full=True)
    assert done >= min(budget.cases, 30), f"only {done} cases ran"


# --------------------------------------------------------------------------- values


def _invalid_utf8(rng: random.Random) -> bytes:
    return rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"ok\xfe\xfd", b"\xf4\x90\x80\x80"])


def rand_value(rng: random.Random) -> tuple[str, bytes]:
    """A raw AnyValue of a random kind, with its description."""
    k = rng.randrange(12)
    if k == 0:
        levels = rng.choice([MAX_NESTING_DEPTH, MAX_NESTING_DEPTH + 1, 100, 2_000, 20_000])
        return f"deep{levels}", deep_value(levels, rng.choice(["k", "a", "ka"]))
    if k == 1:
        n = rng.choice([100, 5_000])
        items = b"".join(_ld(1, _ld(1, str(i).encode())) for i in range(n))
        return f"wide-array{n}", _ld(5, items)
    if k == 2:
        n = rng.choice([100, 3_000])
        items = b"".join(_ld(1, raw_kv(f"k{i}", _ld(1, b"v"))) for i in range(n))
        return f"wide-kvlist{n}", _ld(6, items)
    if k == 3:
        return "huge", _ld(1, b"x" * rng.choice([100_000, 600_000]))
    if k == 4:
        return "empty", b""
    if k == 5:
        return "bad-utf8", _ld(1, _invalid_utf8(rng))
    if k == 6:  # int beyond 63 bits, negative, bool 7, double NaN/inf
        return "int-range", rng.choice(
            [b"\x18" + _varint(2**64 - 1), b"\x18" + _varint(2**63), b"\x10" + _varint(7)]
        )
    if k == 7:
        return "double", b"!" + rng.choice(
            [b"\x00\x00\x00\x00\x00\x00\xf8\x7f", b"\x00\x00\x00\x00\x00\x00\xf0\x7f", bytes(8)]
        )
    if k == 8:
        return "bytes", _ld(7, bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
    if k == 9:  # two values in one AnyValue (protobuf merges)
        return "two-values", _ld(1, b"a") + _ld(6, b"")
    if k == 10:  # an unknown field, a group wire type
        return "unknown", rng.choice([_ld(15, b"zz"), b"\x0b\x0c", b"\x48\x01"])
    return "string", _ld(1, rng.choice(["", "é✓🙂", 'q"\\', "\x00"]).encode())


def otlp_body(rng: random.Random, t: Target) -> tuple[str, bytes]:
    req = RawRequest()
    kinds = []
    for _ in range(rng.randrange(1, 3)):
        rs = req.resource_spans.add()
        owner = {ROLLOUT: t.fuzz_rid, ATTEMPT: t.fuzz_aid} if rng.random() < 0.8 else {}
        res = b"".join(_ld(1, kv.SerializeToString()) for kv in kvs({"service.name": "f", **owner}))
        if rng.random() < 0.2:
            kind, value = rand_value(rng)
            kinds.append("res-" + kind)
            res += _ld(1, raw_kv("r", value))
        rs.resource = res
        ss = rs.scope_spans.add()
        for _ in range(rng.randrange(1, 6)):
            s = ss.spans.add()
            s.trace_id = rng.choice([bytes(range(1, 17)), b"", bytes(16), b"\x01" * 17])
            s.span_id = rng.choice([rng.randbytes(8), rng.randbytes(8), bytes(8), b"\x02"])
            s.name = rng.choice(["span", "", "ü" * 100])
            s.start_time_unix_nano = rng.choice([0, 1, 2**64 - 1, 1_764_117_105 * 10**9])
            s.end_time_unix_nano = rng.choice([0, 2**64 - 1, 1_764_117_106 * 10**9])
            for _ in range(rng.randrange(4)):
                kind, value = rand_value(rng)
                kinds.append(kind)
                s.attributes.append(raw_kv(rng.choice(["a", "a.b", "", "é"]), value))
            if rng.random() < 0.2:
                kind, value = rand_value(rng)
                kinds.append("event-" + kind)
                s.events.append(_ld(2, b"e") + _ld(3, raw_kv("ev", value)))
            if rng.random() < 0.1:
                kind, value = rand_value(rng)
                kinds.append("link-" + kind)
                s.links.append(_ld(1, rng.randbytes(16)) + _ld(4, raw_kv("l", value)))
            if rng.random() < 0.1:
                s.status = rng.choice([b"\x18\x02", b"\x18\x63", b"\x12\x02" + _invalid_utf8(rng)])
    body = req.SerializeToString()
    return "+".join(kinds) or "plain", body


def mutate(rng: random.Random, body: bytes) -> tuple[str, bytes]:
    """A byte-level mutation of an encoded body (or none)."""
    if not body or rng.random() < 0.5:
        return "", body
    b = bytearray(body)
    op = rng.randrange(5)
    if op == 0:
        for _ in range(rng.randrange(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return "flip", bytes(b)
    if op == 1:
        return "truncate", bytes(b[: rng.randrange(len(b))])
    if op == 2:
        i = rng.randrange(len(b))
        return "insert", bytes(b[:i] + rng.randbytes(rng.randrange(1, 16)) + b[i:])
    if op == 3:
        i, j = sorted(rng.randrange(len(b)) for _ in range(2))
        return "duplicate", bytes(b[:j] + b[i:j] + b[j:])
    return "empty", b""


def send_otlp(rng: random.Random, t: Target, body: bytes, content_type: str) -> str:
    transport = rng.choice(["http", "gzip", "grpc"]) if "protobuf" in content_type else "http"
    if content_type.endswith("json") and rng.random() < 0.3:
        transport = "gzip"
    if transport == "grpc":
        try:
            t.export(body, timeout=60, compression=rng.choice([None, grpc.Compression.Gzip]))
        except grpc.RpcError as exc:
            assert exc.code() in GRPC_OK, (exc.code(), exc.details())
        return transport
    headers = {"content-type": content_type}
    if transport == "gzip":
        body = gzip.compress(body, compresslevel=1)
        headers["content-encoding"] = "gzip"
        if rng.random() < 0.1:
            body = body[: len(body) // 2]  # a corrupt gzip stream
    r = t.http.post("/v1/traces", content=body, headers=headers)
    assert r.status_code < 500, (r.status_code, r.content[:500])
    return transport


def test_fuzz_otlp_protobuf(target: Target, fuzz_budget: FuzzBudget) -> None:
    def case(rng: random.Random) -> str:
        what, body = otlp_body(rng, target)
        how, body = mutate(rng, body)
        return f"{what} {how} via " + send_otlp(rng, target, body, "application/x-protobuf")

    run(fuzz_budget, target, "otlp-protobuf", case)


# --------------------------------------------------------------------------- OTLP/JSON


def json_value(rng: random.Random, depth: int = 0) -> object:
    k = rng.randrange(10)
    if k == 0 and depth < 3:
        return {"kvlistValue": {"values": [{"key": "k", "value": json_value(rng, depth + 1)}]}}
    if k == 1 and depth < 3:
        return {"arrayValue": {"values": [json_value(rng, depth + 1) for _ in range(3)]}}
    if k == 2:
        v: object = {"stringValue": "x"}
        for _ in range(rng.choice([MAX_NESTING_DEPTH, 40, 150])):
            v = {"kvlistValue": {"values": [{"key": "k", "value": v}]}}
        return v
    return rng.choice(
        [
            {"intValue": rng.choice(["12", "99999999999999999999999", "-1", "x", 1.5, None])},
            {"doubleValue": rng.choice(["NaN", "Infinity", 1e308, "1e999", "nope"])},
            {"boolValue": rng.choice([True, "true", 3])},
            {"bytesValue": rng.choice(["AAEC", "not base64!", ""])},
            {"stringValue": rng.choice(["", "é", "x" * 200_000, 12])},
            {},
            [],
            "plain",
        ]
    )


def otlp_json(rng: random.Random, t: Target) -> bytes:
    span = {
        "traceId": rng.choice(["0af7651916cd43dd8448eb211c80319c", "zz", "", "00" * 16]),
        "spanId": rng.choice(["b7ad6b7169203331", "b7ad", "", 5]),
        "name": rng.choice(["s", "", None, "ü"]),
        "startTimeUnixNano": rng.choice(["1764117105000000000", "-5", "18446744073709551616", 3]),
        "attributes": [
            {"key": ROLLOUT, "value": {"stringValue": t.fuzz_rid}},
            {"key": ATTEMPT, "value": {"stringValue": t.fuzz_aid}},
            *({"key": f"a{i}", "value": json_value(rng)} for i in range(rng.randrange(4))),
        ],
    }
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span] * rng.randrange(0, 4)}]}]}
    if rng.random() < 0.1:
        body = rng.choice([[], "x", {"resourceSpans": "no"}, {"resourceSpans": [None]}])
    text = json.dumps(body).encode()
    if rng.random() < 0.1:  # an escaped lone surrogate: valid JSON, not Unicode text
        text = text.replace(b'"s"', b'"\\ud800"').replace(b'"k"', b'"\\udfff"')
    if rng.random() < 0.05:
        text = b'{"resourceSpans":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    if rng.random() < 0.2:
        i = rng.randrange(len(text))
        text = text[:i] + _invalid_utf8(rng) + text[i:]
    return text


def test_fuzz_otlp_json(target: Target, fuzz_budget: FuzzBudget) -> None:
    def case(rng: random.Random) -> str:
        how, body = mutate(rng, otlp_json(rng, target))
        return f"json {how} via " + send_otlp(rng, target, body, "application/json")

    run(fuzz_budget, target, "otlp-json", case)


# --------------------------------------------------------------------------- REST


def rest_value(rng: random.Random) -> object:
    k = rng.randrange(9)
    if k == 0:
        v: object = 1
        for _ in range(rng.choice([MAX_NESTING_DEPTH - 1, MAX_NESTING_DEPTH, 200, 3_000])):
            v = [v] if rng.random() < 0.5 else {"k": v}
        return v
    return rng.choice(
        [
            2**63,
            -(2**63) - 1,
            10**30,
            -1,
            0,
            1.5e308,
            "x" * rng.choice([10, 300_000]),
            None,
            [],
            {},
            {"a": [1, "b", None]},
            True,
        ]
    )


def rest_case(rng: random.Random, t: Target) -> tuple[str, str, bytes | None]:
    rid = rng.choice([t.fuzz_rid, "ro-missing", "", "%2F..", "x" * 300])
    v = lambda: rest_value(rng)  # noqa: E731
    q = lambda: rng.choice(["-1", "0", "10", str(2**63), str(10**30), "x", "1e5", ""])  # noqa: E731
    cases: list[tuple[str, str, object]] = [
        ("POST", "/v1/agl/rollouts", {"input": v(), "metadata": v(), "config": v(), "mode": v()}),
        ("POST", "/v1/agl/queues/rollouts/enqueue", {"rollouts": [{"input": v()}] * 3}),
        ("POST", "/v1/agl/queues/rollouts/dequeue", {"limit": v(), "worker_id": v()}),
        ("POST", "/v1/agl/rollouts/search", {"limit": v(), "offset": v(), "sort_by": v()}),
        ("GET", f"/v1/agl/rollouts?limit={q()}&offset={q()}", None),
        ("POST", f"/v1/agl/rollouts/{rid}", {"status": v(), "input": v(), "metadata": v()}),
        ("POST", f"/v1/agl/rollouts/{rid}/attempts", {"worker_id": v()}),
        ("POST", f"/v1/agl/rollouts/{rid}/attempts/search", {"limit": v()}),
        ("POST", f"/v1/agl/rollouts/{rid}/attempts/at-x", {"status": v(), "metadata": v()}),
        ("POST", "/v1/agl/workers/search", {"limit": v(), "status_in": v()}),
        ("POST", "/v1/agl/workers/w1", {"heartbeat_stats": v()}),
        ("POST", "/v1/agl/resources", {"r": v()}),
        ("POST", "/v1/agl/resources/res-x", v()),
        ("POST", "/v1/agl/spans", {"rollout_id": t.fuzz_rid, "attempt_id": v(), "attributes": v()}),
        ("POST", "/v1/agl/spans/search", {"rollout_id": rid, "limit": v(), "offset": v()}),
        ("POST", "/v1/agl/spans/next", {"rollout_id": rid, "attempt_id": v()}),
        ("POST", "/v1/agl/waits/rollouts", {"rollout_ids": [rid], "timeout": 0}),
    ]
    method, path, body = rng.choice(cases)
    if body is None:
        return method, path, None
    try:
        raw = json.dumps(body).encode()
    except (ValueError, RecursionError):
        raw = b"[" * 5_000 + b"]" * 5_000
    if rng.random() < 0.3:
        _, raw = mutate(rng, raw)
    if rng.random() < 0.05:
        raw = _invalid_utf8(rng) + raw
    if rng.random() < 0.05:
        raw = raw.replace(b'"x', b'"\\udc00x', 1).replace(b'"a"', b'"\\ud800"')
    return method, path, raw


def test_fuzz_rest(target: Target, fuzz_budget: FuzzBudget) -> None:
    def case(rng: random.Random) -> str:
        method, path, raw = rest_case(rng, target)
        r = target.http.request(
            method, path, content=raw, headers={"content-type": "application/json"}
        )
        assert r.status_code < 500, (method, path, r.status_code, r.text[:500])
        return f"{method} {path[:60]} -> {r.status_code}"

    run(fuzz_budget, target, "rest", case)
