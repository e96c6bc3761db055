"""``GET /metrics`` of a real server: Prometheus text with intake, request, queue, rollout,
database and span-id cache figures that match what the test did."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from prometheus_client.parser import text_string_to_metric_families

from lightspan.store.backends.span_chunks import DEFAULT_SPAN_ID_CACHE
from tests.store.otlp_payloads import make_request
from tests.store.servers import StoreProcess

PB = {"content-type": "application/x-protobuf"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    db = tmp_path_factory.mktemp("metrics") / "store.db"
    proc = StoreProcess("sqlite", str(db)).start()
    yield proc
    assert proc.stop() == 0, proc.log()[-2000:]


def scrape(server: StoreProcess) -> dict[tuple[str, tuple], float]:
    r = httpx.get(server.address + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_what_happened(server: StoreProcess) -> None:
    http = httpx.Client(base_url=server.address, timeout=10)
    before = scrape(server)
    r = http.post("/v1/agl/rollouts", json={"input": "m"})
    rid, aid = r.json()["rollout_id"], r.json()["attempt"]["attempt_id"]
    req, _ = make_request(3, rollout_id=rid, attempt_id=aid)
    bad = req.resource_spans[0].scope_spans[0].spans.add()
    bad.CopyFrom(req.resource_spans[0].scope_spans[0].spans[0])
    bad.span_id = b"\x00" * 8  # rejected: invalid span id
    assert http.post("/v1/traces", content=req.SerializeToString(), headers=PB).status_code == 200
    # The same batch again: duplicates.
    assert http.post("/v1/traces", content=req.SerializeToString(), headers=PB).status_code == 200
    assert http.post("/v1/traces", content=b"\xff\xff", headers=PB).status_code == 400
    g, _ = make_request(2, rollout_id=rid, attempt_id=aid)
    with grpc.insecure_channel(server.grpc_address) as ch:
        TraceServiceStub(ch).Export(g, timeout=10)
    for i in range(2):
        http.post("/v1/agl/queues/rollouts/enqueue", json={"rollouts": [{"input": i}]})
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("lightspan_store_spans_total", transport="http", outcome="stored") == 3
    assert delta("lightspan_store_spans_total", transport="http", outcome="duplicate") == 3
    assert delta("lightspan_store_spans_total", transport="http", outcome="rejected") == 2
    assert delta("lightspan_store_spans_total", transport="grpc", outcome="stored") == 2
    assert delta("lightspan_store_http_requests_total", api="otlp_http", status="200") == 2
    assert delta("lightspan_store_http_requests_total", api="otlp_http", status="400") == 1
    assert delta("lightspan_store_http_requests_total", api="rest", status="201") == 3
    assert delta("lightspan_store_grpc_requests_total", code="OK") == 1
    assert delta("lightspan_store_intake_seconds_count", transport="http") == 2
    assert delta("lightspan_store_intake_seconds_count", transport="grpc") == 1
    assert after[("lightspan_store_queue_depth", ())] == 2
    assert after[("lightspan_store_rollouts", (("status", "queuing"),))] == 2
    assert after[("lightspan_store_rollouts", (("status", "running"),))] == 1  # spans started it
    assert after[("lightspan_store_database_bytes", ())] > 10_000
    assert after[("process_resident_memory_bytes", ())] > 10_000_000
    # The span-id cache: the attempt's 5 stored ids, its default bound, nothing read back.
    assert delta("lightspan_store_span_id_cache_ids") == 5
    assert after[("lightspan_store_span_id_cache_limit", ())] == DEFAULT_SPAN_ID_CACHE
    assert after[("lightspan_store_span_ids_reread_total", ())] == 0
