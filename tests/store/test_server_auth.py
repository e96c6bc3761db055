"""Bearer-token authentication on REST, OTLP/HTTP and OTLP/gRPC; the token never reaches logs."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from lightspan.store.api.client import LightningStoreClient, StoreClientError
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
        before = (await client.statistics())["total_rollouts"]
        await client.start_rollout("counted")
        assert (await client.statistics())["total_rollouts"] == before + 1
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


def test_token_file_keeps_the_token_off_the_command_line(tmp_path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    proc = StoreProcess("memory", extra_args=("--token-file", str(path))).start()
    try:
        assert proc.proc is not None
        cmdline = open(f"/proc/{proc.proc.pid}/cmdline", "rb").read()  # what `ps` shows
        assert TOKEN.encode() not in cmdline and str(path).encode() in cmdline
        base = proc.address + "/v1/agl/statistics"
        assert httpx.get(base).status_code == 401
        assert httpx.get(base, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        proc.stop()


@pytest.mark.parametrize("content", [None, "  \n"], ids=["missing", "empty"])
def test_a_bad_token_file_stops_the_server_with_a_reason(tmp_path, content: str | None) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RuntimeError) as err:
        StoreProcess("memory", extra_args=("--token-file", str(path))).start(timeout=20)
    assert f"--token-file {path}" in str(err.value)
    assert ("empty" if content else "cannot read it") in str(err.value)
