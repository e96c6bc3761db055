"""Nothing acknowledged is lost: SIGKILL the server mid-ingestion, restart it on the same
database (SQLite file or PostgreSQL), and find every span whose export was acknowledged."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from tests.store.otlp_payloads import make_request
from tests.store.servers import StoreProcess

BATCH = 100


def _http_sender(
    server: StoreProcess, rollout_id: str, attempt_id: str, acked: set[str], stop: threading.Event
) -> None:
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            req, ids = make_request(BATCH, rollout_id=rollout_id, attempt_id=attempt_id)
            try:
                r = client.post(
                    server.address + "/v1/traces",
                    content=req.SerializeToString(),
                    headers={"content-type": "application/x-protobuf"},
                )
            except httpx.HTTPError:
                return  # the server is gone: this batch was never acknowledged
            if r.status_code == 200:
                resp = ExportTraceServiceResponse.FromString(r.content)
                if resp.partial_success.rejected_spans:
                    return  # main thread sees too few acks and fails with the server log
                acked.update(ids)


def _grpc_sender(
    server: StoreProcess, rollout_id: str, attempt_id: str, acked: set[str], stop: threading.Event
) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = TraceServiceStub(channel)
        while not stop.is_set():
            req, ids = make_request(BATCH, rollout_id=rollout_id, attempt_id=attempt_id)
            try:
                resp = stub.Export(req, timeout=5)
            except grpc.RpcError:
                return
            if resp.partial_success.rejected_spans:
                return
            acked.update(ids)


def _kill_mid_ingestion_then_check(make_server: Callable[[], StoreProcess]) -> None:
    server = make_server().start()
    started = httpx.post(server.address + "/v1/agl/rollouts", json={"input": "durability"}).json()
    rid, aid = started["rollout_id"], started["attempt"]["attempt_id"]
    acked_http: set[str] = set()
    acked_grpc: set[str] = set()
    stop = threading.Event()
    senders = [
        threading.Thread(target=_http_sender, args=(server, rid, aid, acked_http, stop)),
        threading.Thread(target=_grpc_sender, args=(server, rid, aid, acked_grpc, stop)),
    ]
    for t in senders:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked_http) < 5 * BATCH or len(acked_grpc) < 5 * BATCH:
            assert time.monotonic() < deadline, "ingestion too slow"
            assert all(t.is_alive() for t in senders), server.log()[-2000:]
            time.sleep(0.05)
    finally:
        server.kill()  # SIGKILL while both senders are mid-request
        stop.set()
        for t in senders:
            t.join(30)
    acked = acked_http | acked_grpc

    restarted = make_server().start()
    try:
        page = httpx.post(
            restarted.address + "/v1/agl/spans/search",
            json={"rollout_id": rid, "attempt_id": aid},
            timeout=30,
        ).json()
        stored = {s["span_id"] for s in page["items"]}
        missing = acked - stored
        assert not missing, f"{len(missing)} acknowledged spans lost of {len(acked)}"
        assert page["total"] == len(stored) >= len(acked)
        # the restarted server keeps issuing fresh sequence ids
        seqs = [s["sequence_id"] for s in page["items"]]
        assert len(set(seqs)) == len(seqs)
    finally:
        assert restarted.stop() == 0


def test_sigkill_sqlite_loses_no_acknowledged_span(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    _kill_mid_ingestion_then_check(lambda: StoreProcess("sqlite", db=db))


@pytest.mark.postgres
def test_sigkill_postgres_loses_no_acknowledged_span(postgres_db_dsn: str) -> None:
    _kill_mid_ingestion_then_check(lambda: StoreProcess("postgres", db=postgres_db_dsn))
