"""TLS on both ports (``--tls-cert/--tls-key``), checked by clients that verify the certificate
against a CA made for the test (openssl), and refused by clients that do not trust it."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from tests.store.otlp_payloads import make_request
from tests.store.servers import StoreProcess

PB = {"content-type": "application/x-protobuf"}


def make_certs(d: Path) -> tuple[str, str, str]:
    """A CA, and a certificate it signs for 127.0.0.1/localhost: (cert, key, ca) paths."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=lightspan test CA")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return str(d / "server.pem"), str(d / "server.key"), str(d / "ca.pem")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(certs: tuple[str, str, str]) -> Iterator[StoreProcess]:
    proc = StoreProcess("memory", tls=certs).start()
    yield proc
    assert proc.stop() == 0, proc.log()[-2000:]


def test_rest_and_otlp_http_over_verified_tls(server: StoreProcess, certs) -> None:
    assert server.address.startswith("https://")
    with httpx.Client(
        base_url=server.address, verify=ssl.create_default_context(cafile=certs[2]), timeout=10
    ) as http:
        r = http.post("/v1/agl/rollouts", json={"input": "tls"})
        assert r.status_code == 201
        rid, aid = r.json()["rollout_id"], r.json()["attempt"]["attempt_id"]
        req, span_ids = make_request(3, rollout_id=rid, attempt_id=aid)
        r = http.post("/v1/traces", content=req.SerializeToString(), headers=PB)
        assert r.status_code == 200
        spans = http.get("/v1/agl/spans", params={"rollout_id": rid}).json()["items"]
        assert [s["span_id"] for s in spans] == span_ids


def test_otlp_grpc_over_verified_tls(server: StoreProcess, certs) -> None:
    ca = Path(certs[2]).read_bytes()
    with httpx.Client(
        base_url=server.address, verify=ssl.create_default_context(cafile=certs[2]), timeout=10
    ) as http:
        r = http.post("/v1/agl/rollouts", json={"input": "tls-grpc"})
        rid, aid = r.json()["rollout_id"], r.json()["attempt"]["attempt_id"]
        req, span_ids = make_request(2, rollout_id=rid, attempt_id=aid)
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
        with grpc.secure_channel(server.grpc_address, creds) as ch:
            resp = TraceServiceStub(ch).Export(req, timeout=10)
        assert not resp.HasField("partial_success")
        spans = http.get("/v1/agl/spans", params={"rollout_id": rid}).json()["items"]
        assert [s["span_id"] for s in spans] == span_ids


def test_clients_that_do_not_trust_the_certificate_or_speak_plaintext_fail(
    server: StoreProcess,
) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(server.address + "/v1/agl/health", timeout=10)  # system CAs only
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.address.replace("https", "http") + "/v1/agl/health", timeout=10)
    req, _ = make_request(1)
    with grpc.secure_channel(server.grpc_address, grpc.ssl_channel_credentials()) as ch:
        with pytest.raises(grpc.RpcError) as err:
            TraceServiceStub(ch).Export(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(server.grpc_address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            TraceServiceStub(ch).Export(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.proc is not None and server.proc.poll() is None


def test_a_certificate_without_its_key_is_refused(certs) -> None:
    with pytest.raises(RuntimeError, match="--tls-cert and --tls-key go together"):
        StoreProcess("memory", extra_args=("--tls-cert", certs[0])).start(timeout=20)
