"""Bearer-token authentication on REST, OTLP/HTTP and OTLP/gRPC; the token never reaches logs."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from lightspan.store.client import LightningStoreClient, StoreClientError
from tests.store.otlp_payloads import make_request
from tests.store.servers import StoreProcess

TOKEN = "s3cret-token-that-must-not-leak"


@pytest.fixture(scope="module")
def server() -> Iterator[StoreProcess]:
    # The token comes from the environment variable here; --token is covered by the CLI parser.
    proc = StoreProcess(
        "memory", env={"LIGHTSPAN_STORE_TOKEN": TOKEN}, extra_args=("--access-log",)
    ).start()
    yield proc
    proc.stop()
    assert TOKEN not in proc.log()


def test_rest_requires_the_token_but_health_is_open(server: StoreProcess) -> None:
    base = server.address + "/v1/agl"
    assert httpx.get(base + "/health").status_code == 200
    r = httpx.get(base + "/statistics")
    assert r.status_code == 401 and r.json()["detail"] == "missing bearer token"
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = httpx.get(base + "/statistics", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and TOKEN not in r.text
    r = httpx.get(base + "/statistics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200


def test_otlp_http_requires_the_token(server: StoreProcess) -> None:
    req, _ = make_request(1)
    headers = {"content-type": "application/x-protobuf"}
    url = server.address + "/v1/traces"
    assert httpx.post(url, content=req.SerializeToString(), headers=headers).status_code == 401
    headers["authorization"] = f"Bearer {TOKEN}"
    assert httpx.post(url, content=req.SerializeToString(), headers=headers).status_code == 200


def test_grpc_requires_the_token(server: StoreProcess) -> None:
    req, _ = make_request(1)
    with grpc.insecure_channel(server.grpc_address) as ch:
        stub = TraceServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert TOKEN not in (err.value.details() or "")
        stub.Export(req, timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),))


async def test_client_sends_the_token(server: StoreProcess) -> None:
    client = LightningStoreClient(server.address, token=TOKEN)
    try:
        assert (await client.statistics())["total_rollouts"] >= 0
    finally:
        await client.close()
    anonymous = LightningStoreClient(server.address, retries=0)
    try:
        with pytest.raises(StoreClientError) as err:
            await anonymous.statistics()
        assert err.value.status == 401 and server.address in str(err.value)
        assert "statistics" in str(err.value)
    finally:
        await anonymous.close()
    assert TOKEN not in repr(LightningStoreClient(server.address, token=TOKEN))
