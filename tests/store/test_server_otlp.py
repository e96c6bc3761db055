"""OTLP intake of ``lightspan store serve``: OTLP/HTTP (protobuf, gzip, JSON) and OTLP/gRPC,
partial success, bad input, size limits, and the standard OpenTelemetry SDK exporters."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.store.otlp_payloads import kvs, make_request
from tests.store.servers import StoreProcess

PB = {"content-type": "application/x-protobuf"}


@pytest.fixture(scope="module")
def server() -> Iterator[StoreProcess]:
    proc = StoreProcess("memory", extra_args=("--max-request-bytes", "200000")).start()
    yield proc
    assert proc.stop() == 0, proc.log()[-2000:]


@pytest.fixture
def http(server: StoreProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.address, timeout=10) as client:
        yield client


@pytest.fixture
def stub(server: StoreProcess) -> Iterator[TraceServiceStub]:
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield TraceServiceStub(channel)


def _rollout(http: httpx.Client) -> tuple[str, str]:
    r = http.post("/v1/agl/rollouts", json={"input": "otlp"}).json()
    return r["rollout_id"], r["attempt"]["attempt_id"]


def _spans(http: httpx.Client, rollout_id: str) -> list[dict]:
    r = http.get("/v1/agl/spans", params={"rollout_id": rollout_id})
    assert r.status_code == 200
    return r.json()["items"]


def _export_http(http: httpx.Client, req: ExportTraceServiceRequest, **kw) -> httpx.Response:
    return http.post("/v1/traces", content=req.SerializeToString(), headers=PB, **kw)


def test_http_protobuf_stores_spans_with_issued_sequence_ids(http: httpx.Client) -> None:
    rid, aid = _rollout(http)
    req, span_ids = make_request(5, rollout_id=rid, attempt_id=aid)
    r = _export_http(http, req)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-protobuf")
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert not resp.HasField("partial_success")
    spans = _spans(http, rid)
    assert [s["span_id"] for s in spans] == span_ids
    assert [s["sequence_id"] for s in spans] == [1, 2, 3, 4, 5]
    s = spans[0]
    assert s["attempt_id"] == aid and s["name"] == "openai.chat.completion"
    assert s["attributes"]["gen_ai.usage.input_tokens"] == 120
    assert s["resource"]["attributes"]["agentlightning.rollout_id"] == rid
    assert s["status"] == {"status_code": "OK", "description": None}
    assert isinstance(s["start_time"], float) and s["start_time"] < s["end_time"]
    assert s["context"]["span_id"] == s["span_id"] and len(s["trace_id"]) == 32
    # the first span made the rollout running
    assert http.get(f"/v1/agl/rollouts/{rid}").json()["status"] == "running"


def test_http_gzip_and_ids_on_span_attributes(http: httpx.Client) -> None:
    rid, aid = _rollout(http)
    req, span_ids = make_request(
        3,
        rollout_id=rid,
        attempt_id=aid,
        ids_on="span",
        span_attrs={"agentlightning.span_sequence_id": "40"},
    )
    r = http.post(
        "/v1/traces",
        content=gzip.compress(req.SerializeToString()),
        headers={**PB, "content-encoding": "gzip"},
    )
    assert r.status_code == 200
    spans = _spans(http, rid)
    assert sorted(s["span_id"] for s in spans) == sorted(span_ids)
    assert {s["sequence_id"] for s in spans} == {40}


def test_http_json_otlp(http: httpx.Client) -> None:
    rid, aid = _rollout(http)
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "agentlightning.rollout_id", "value": {"stringValue": rid}},
                        {"key": "agentlightning.attempt_id", "value": {"stringValue": aid}},
                    ]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "json-span",
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000001000000000",
                                "attributes": [{"key": "n", "value": {"intValue": "7"}}],
                                "status": {"code": 2, "message": "bad"},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    r = http.post("/v1/traces", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    [span] = _spans(http, rid)
    assert span["trace_id"] == trace_id and span["span_id"] == span_id
    assert span["attributes"] == {"n": 7} and span["start_time"] == 1700000000.0
    assert span["status"] == {"status_code": "ERROR", "description": "bad"}


def test_partial_success_reports_rejected_spans(http: httpx.Client, server: StoreProcess) -> None:
    rid, aid = _rollout(http)
    good, good_ids = make_request(3, rollout_id=rid, attempt_id=aid)
    orphan, _ = make_request(2, rollout_id=None, attempt_id=None)
    bad_id, _ = make_request(1, rollout_id=rid, attempt_id=aid)
    bad_id.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x01\x02"
    good.resource_spans.extend(orphan.resource_spans)
    good.resource_spans.extend(bad_id.resource_spans)
    for send in ("http", "grpc"):
        if send == "http":
            r = _export_http(http, good)
            assert r.status_code == 200
            resp = ExportTraceServiceResponse.FromString(r.content)
        else:
            with grpc.insecure_channel(server.grpc_address) as ch:
                resp = TraceServiceStub(ch).Export(good, timeout=10)
        assert resp.partial_success.rejected_spans == 3
        msg = resp.partial_success.error_message
        assert "missing agentlightning.rollout_id" in msg and "invalid span_id" in msg
    # the good spans were stored once (the second export was all duplicates)
    assert sorted(s["span_id"] for s in _spans(http, rid)) == sorted(good_ids)


def test_bad_input_over_http(http: httpx.Client) -> None:
    r = http.post("/v1/traces", content=b"\xff\xfe not protobuf", headers=PB)
    assert r.status_code == 400
    assert "ExportTraceServiceRequest" in Status.FromString(r.content).message
    r = http.post("/v1/traces", content=b"not gzip", headers={**PB, "content-encoding": "gzip"})
    assert r.status_code == 400 and "gzip" in Status.FromString(r.content).message
    r = http.post("/v1/traces", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in json.loads(r.content)["message"]
    r = http.post("/v1/traces", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    # an empty request is a valid (empty) export
    assert http.post("/v1/traces", content=b"", headers=PB).status_code == 200
    for path in ("/v1/metrics", "/v1/logs"):
        assert http.post(path, content=b"", headers=PB).status_code == 501


def test_oversize_requests_are_refused(http: httpx.Client, server: StoreProcess) -> None:
    req, _ = make_request(600, rollout_id="ro-big", attempt_id="at-big")  # ~300 kB > 200 kB
    r = _export_http(http, req)
    assert r.status_code == 413 and "limit" in Status.FromString(r.content).message
    # a small gzip body that inflates beyond the limit is refused too
    bomb = gzip.compress(b"\x00" * 1_000_000)
    r = http.post("/v1/traces", content=bomb, headers={**PB, "content-encoding": "gzip"})
    assert r.status_code == 413
    with grpc.insecure_channel(server.grpc_address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            TraceServiceStub(ch).Export(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_grpc_export_and_bad_input(
    http: httpx.Client, stub: TraceServiceStub, server: StoreProcess
) -> None:
    rid, aid = _rollout(http)
    req, span_ids = make_request(4, rollout_id=rid, attempt_id=aid)
    resp = stub.Export(req, timeout=10)
    assert not resp.HasField("partial_success")
    assert [s["span_id"] for s in _spans(http, rid)] == span_ids
    gz, gz_ids = make_request(2, rollout_id=rid, attempt_id=aid)
    stub.Export(gz, timeout=10, compression=grpc.Compression.Gzip)
    assert [s["span_id"] for s in _spans(http, rid)][-2:] == gz_ids
    with grpc.insecure_channel(server.grpc_address) as ch:
        raw = ch.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\xff\xfe garbage", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in err.value.details()


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_opentelemetry_sdk_exporters(
    http: httpx.Client, server: StoreProcess, transport: str
) -> None:
    """The stock OTLP exporters of the OpenTelemetry SDK deliver to the store unchanged."""
    rid, aid = _rollout(http)
    if transport == "grpc":
        exporter = GrpcSpanExporter(endpoint=server.grpc_address, insecure=True)
    else:
        exporter = HttpSpanExporter(endpoint=server.address + "/v1/traces")
    provider = TracerProvider(
        resource=Resource.create(
            {"agentlightning.rollout_id": rid, "agentlightning.attempt_id": aid}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("root") as root:
        root.set_attribute("tags", ["a", "b"])
        with tracer.start_as_current_span("child") as child:
            child.add_event("thinking", {"step": 1})
    provider.shutdown()
    spans = {s["name"]: s for s in _spans(http, rid)}
    assert set(spans) == {"root", "child"}
    assert spans["child"]["parent_id"] == spans["root"]["span_id"]
    assert spans["child"]["parent"]["span_id"] == spans["root"]["span_id"]
    assert spans["root"]["attributes"]["tags"] == ["a", "b"]
    assert spans["child"]["events"][0]["name"] == "thinking"
    assert spans["root"]["resource"]["attributes"]["telemetry.sdk.language"] == "python"


def test_attribute_value_kinds_survive_transport(
    http: httpx.Client, stub: TraceServiceStub
) -> None:
    rid, aid = _rollout(http)
    req, _ = make_request(1, rollout_id=rid, attempt_id=aid)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    del span.attributes[:]
    span.attributes.extend(
        kvs(
            {
                "s": "x",
                "i": -3,
                "f": 0.25,
                "b": False,
                "arr": [1, 2],
                "raw": b"\x00\xff",
                "kv": {"a": 1, "nested": {"b": "c"}},
                "mixed": [1, "x"],
            }
        )
    )
    stub.Export(req, timeout=10)
    [stored] = _spans(http, rid)
    assert stored["attributes"] == {
        "s": "x",
        "i": -3,
        "f": 0.25,
        "b": False,
        "arr": [1, 2],
        "raw": "00ff",
        "kv.a": 1,
        "kv.nested.b": "c",
        "mixed.0": 1,
        "mixed.1": "x",
    }


def test_json_status_body_for_json_requests(http: httpx.Client) -> None:
    r = http.post(
        "/v1/traces", json={"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}
    )
    assert r.status_code == 400
    status = json_format.Parse(r.content, Status())
    assert "hex" in status.message


def test_random_bytes_never_crash_the_server(http: httpx.Client) -> None:
    for _ in range(20):
        r = http.post("/v1/traces", content=os.urandom(64), headers=PB)
        assert r.status_code in (200, 400)
    assert http.get("/v1/agl/health").status_code == 200
