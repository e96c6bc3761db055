"""Requests past the store's bounds (nesting depth, body size, integer ranges) against a real
``lightspan store serve``: each gets a clear rejection naming the problem, never a crash or a
5xx, and the server goes on answering. A 15,000-deep kvlist once crashed it (SIGSEGV)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from lightspan.store.api.limits import MAX_JSON_BODY_DEPTH, MAX_NESTING_DEPTH
from tests.store.otlp_payloads import make_request
from tests.store.raw_otlp import RawRequest
from tests.store.servers import StoreProcess
from tests.store.test_native_intake import deep_value, raw_kv

PB = {"content-type": "application/x-protobuf"}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TOO_DEEP = f"a span attribute value nests deeper than {MAX_NESTING_DEPTH} levels (the limit)"


@pytest.fixture(scope="module", params=["native", "python"])
def server(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[StoreProcess]:
    """A SQLite server converting OTLP in Rust (when built) or in Python."""
    db = tmp_path_factory.mktemp("limits") / "store.db"
    env = {"LIGHTSPAN_NATIVE_INTAKE": "1" if request.param == "native" else "0"}
    proc = StoreProcess(
        "sqlite", str(db), env=env, extra_args=("--max-request-bytes", "4000000")
    ).start()
    yield proc
    assert proc.stop() == 0, proc.log()[-2000:]


@pytest.fixture
def http(server: StoreProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.address, timeout=30) as client:
        yield client


def _rollout(http: httpx.Client) -> tuple[str, str]:
    r = http.post("/v1/agl/rollouts", json={"input": "limits"})
    assert r.status_code == 201, r.text
    return r.json()["rollout_id"], r.json()["attempt"]["attempt_id"]


def _span_ids(http: httpx.Client, rollout_id: str) -> list[str]:
    r = http.get("/v1/agl/spans", params={"rollout_id": rollout_id})
    assert r.status_code == 200
    return [s["span_id"] for s in r.json()["items"]]


def _with_deep_attribute(rid: str, aid: str, levels: int, pattern: str) -> tuple[bytes, list[str]]:
    """Two spans; the first carries a value nested ``levels`` deep."""
    req, span_ids = make_request(2, rollout_id=rid, attempt_id=aid)
    raw = RawRequest()
    raw.ParseFromString(req.SerializeToString())
    raw.resource_spans[0].scope_spans[0].spans[0].attributes.append(
        raw_kv("deep", deep_value(levels, pattern))
    )
    return raw.SerializeToString(), span_ids


def _export(server: StoreProcess, http: httpx.Client, transport: str, body: bytes):
    """Send one export body; returns the ExportTraceServiceResponse."""
    if transport == "grpc":
        with grpc.insecure_channel(server.grpc_address) as ch:
            raw = ch.unary_unary(
                EXPORT,
                request_serializer=None,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )
            return raw(body, timeout=30, compression=grpc.Compression.Gzip)
    headers = dict(PB)
    if transport == "gzip":
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    r = http.post("/v1/traces", content=body, headers=headers)
    assert r.status_code == 200, (r.status_code, Status.FromString(r.content).message)
    return ExportTraceServiceResponse.FromString(r.content)


@pytest.mark.parametrize("transport", ["http", "gzip", "grpc"])
@pytest.mark.parametrize(
    "levels, pattern", [(15_000, "k"), (20_000, "a"), (MAX_NESTING_DEPTH + 1, "ka")]
)
def test_deep_values_reject_their_span_and_the_server_lives_on(
    server: StoreProcess, http: httpx.Client, transport: str, levels: int, pattern: str
) -> None:
    rid, aid = _rollout(http)
    body, span_ids = _with_deep_attribute(rid, aid, levels, pattern)
    resp = _export(server, http, transport, body)
    assert resp.partial_success.rejected_spans == 1
    assert TOO_DEEP in resp.partial_success.error_message
    assert server.proc is not None and server.proc.poll() is None, server.log()[-2000:]
    # The other span of the batch is stored, and the server still answers.
    assert _span_ids(http, rid) == span_ids[1:]
    assert http.get("/v1/agl/health").status_code == 200


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_value_at_the_limit_is_stored(
    server: StoreProcess, http: httpx.Client, transport: str
) -> None:
    rid, aid = _rollout(http)
    body, span_ids = _with_deep_attribute(rid, aid, MAX_NESTING_DEPTH, "k")
    resp = _export(server, http, transport, body)
    assert not resp.HasField("partial_success")
    assert _span_ids(http, rid) == span_ids
    spans = http.get("/v1/agl/spans", params={"rollout_id": rid}).json()["items"]
    key = "deep" + ".k" * (MAX_NESTING_DEPTH - 1)
    assert spans[0]["attributes"][key] == "x"


def _json_kvlist(levels: int) -> dict:
    value: dict = {"stringValue": "x"}
    for _ in range(levels - 1):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


def _json_export(rid: str, aid: str, value: dict) -> bytes:
    attrs = [
        {"key": "agentlightning.rollout_id", "value": {"stringValue": rid}},
        {"key": "agentlightning.attempt_id", "value": {"stringValue": aid}},
    ]
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "deep",
        "startTimeUnixNano": "1764117105000000000",
        "attributes": [*attrs, {"key": "deep", "value": value}],
    }
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    return json.dumps(body).encode()


def test_deep_otlp_json_is_refused_with_a_reason(http: httpx.Client) -> None:
    rid, aid = _rollout(http)
    headers = {"content-type": "application/json"}
    r = http.post(
        "/v1/traces",
        content=_json_export(rid, aid, _json_kvlist(MAX_NESTING_DEPTH)),
        headers=headers,
    )
    assert r.status_code == 200 and "partialSuccess" not in r.json(), r.text
    assert _span_ids(http, rid) == ["b7ad6b7169203331"]
    # Past the limit, protobuf's JSON parser refuses the whole request: 400 naming the limit.
    bodies = [
        _json_export(rid, aid, _json_kvlist(MAX_NESTING_DEPTH + 1)),
        _json_export(rid, aid, _json_kvlist(MAX_JSON_BODY_DEPTH)),
        b'{"resourceSpans":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ]
    for body in bodies:
        r = http.post("/v1/traces", content=body, headers=headers)
        assert r.status_code == 400, r.text
        assert "nests deeper than" in r.json()["message"], r.text
    assert http.get("/v1/agl/health").status_code == 200


# --------------------------------------------------------------------------- REST bodies


def _nested_json(levels: int) -> object:
    value: object = "x"
    for _ in range(levels - 1):
        value = {"k": value} if levels % 2 else [value]
    return value


def test_rest_values_deeper_than_the_limit_get_422_naming_it(http: httpx.Client) -> None:
    ok = http.post("/v1/agl/rollouts", json={"input": _nested_json(MAX_NESTING_DEPTH)})
    assert ok.status_code == 201, ok.text
    for levels in (MAX_NESTING_DEPTH + 1, MAX_NESTING_DEPTH + 2):
        for path, body in [
            ("/v1/agl/rollouts", {"input": _nested_json(levels)}),
            ("/v1/agl/queues/rollouts/enqueue", {"rollouts": [{"input": _nested_json(levels)}]}),
            ("/v1/agl/rollouts", {"input": 1, "metadata": {"m": _nested_json(levels)}}),
        ]:
            r = http.post(path, json=body)
            assert r.status_code == 422, (path, r.status_code, r.text)
            assert f"nests deeper than {MAX_NESTING_DEPTH} levels" in r.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"input":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"input":' + b'{"a":' * 5_000 + b"1" + b"}" * 5_000 + b"}",
    ],
    ids=["array-50000", "object-5000"],
)
def test_rest_bodies_nested_past_python_recursion_get_400(http: httpx.Client, body: bytes) -> None:
    r = http.post("/v1/agl/rollouts", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert f"nests deeper than {MAX_JSON_BODY_DEPTH} levels" in r.json()["detail"]


@pytest.mark.parametrize(
    "method, path, kw",
    [
        ("POST", "/v1/agl/rollouts/search", {"json": {"limit": 10**30}}),
        ("POST", "/v1/agl/rollouts/search", {"json": {"limit": 2**63}}),
        ("POST", "/v1/agl/rollouts/search", {"json": {"limit": 10**6}}),
        ("POST", "/v1/agl/rollouts/search", {"json": {"offset": 2**64}}),
        ("GET", "/v1/agl/rollouts", {"params": {"limit": str(10**30)}}),
        ("GET", "/v1/agl/rollouts", {"params": {"offset": str(10**30)}}),
        ("POST", "/v1/agl/queues/rollouts/dequeue", {"json": {"limit": 10**12}}),
        ("POST", "/v1/agl/rollouts", {"json": {"input": {"n": 10**20}}}),
        ("POST", "/v1/agl/rollouts", {"json": {"input": 1, "config": {"max_attempts": 2**70}}}),
    ],
)
def test_out_of_range_integers_get_400(http: httpx.Client, method: str, path: str, kw) -> None:
    r = http.request(method, path, **kw)
    assert r.status_code == 400, r.text
    assert "limit" in r.text or "offset" in r.text or "64-bit" in r.text, r.text


def test_rest_bodies_past_max_request_bytes_get_413(
    server: StoreProcess, http: httpx.Client
) -> None:
    big = {"input": "x" * 5_000_000}
    for path in ("/v1/agl/rollouts", "/v1/agl/queues/rollouts/enqueue", "/v1/agl/spans"):
        r = http.post(path, json=big)
        assert r.status_code == 413, (path, r.status_code)
        assert "exceeds the limit of 4000000 bytes" in r.json()["detail"]

    # Without a Content-Length (chunked), the limit is enforced while reading.
    def chunks() -> Iterator[bytes]:
        yield b'{"input":"'
        for _ in range(100):
            yield b"y" * 65536
        yield b'"}'

    r = http.post(
        "/v1/agl/rollouts", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert server.proc is not None and server.proc.poll() is None
    assert http.get("/v1/agl/health").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": "\\ud800"}',
        b'{"input": "\xed\xa0\x80"}',
        b'{"input": 1, "metadata": {"\\udc00": 1}}',
    ],
    ids=["escaped-lone-surrogate", "encoded-surrogate", "surrogate-key"],
)
def test_strings_that_are_not_unicode_get_400(http: httpx.Client, body: bytes) -> None:
    """Found by the fuzz suite: a lone surrogate reached protobuf's JSON parser (500)."""
    headers = {"content-type": "application/json"}
    r = http.post("/v1/agl/rollouts", content=body, headers=headers)
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"], r.text
    otlp = body.replace(b'{"input"', b'{"resourceSpans": [], "x"')
    r = http.post("/v1/traces", content=otlp, headers=headers)
    assert r.status_code == 400 and "body is not JSON" in r.json()["message"], r.text
