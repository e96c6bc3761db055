"""OTLP senders (gRPC and HTTP/protobuf) that send already-encoded export requests, once.

Why not call the SDK's ``OTLPSpanExporter`` directly: it encodes and retries internally and
never gives the encoded batch back, so a batch it gives up on cannot be spooled or replayed.
Here the SDK's own encoder (``encode_spans``) builds the request, and a sender makes exactly
one attempt with a timeout and says whether a failure is worth retrying; the exporter owns
retries, backoff and the spool. Settings follow the OpenTelemetry specification's
``OTEL_EXPORTER_OTLP_[TRACES_]*`` variables (see :func:`resolve_target`).
"""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.util.re import parse_env_headers

from lightspan.config import parse_flag

__all__ = [
    "GrpcSender",
    "HttpSender",
    "OtlpTarget",
    "SendError",
    "SendResult",
    "make_sender",
    "resolve_target",
]

Protocol = Literal["grpc", "http/protobuf"]
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
DEFAULT_TIMEOUT_S = 10.0

# Failures the OTLP specification calls retryable.
RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
RETRYABLE_HTTP = frozenset({408, 429, 502, 503, 504})


class SendError(Exception):
    """One attempt failed; ``retryable`` says whether the same bytes may succeed later."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class SendResult:
    """The target took the batch; ``rejected`` spans of it were refused (``partial_success``)."""

    rejected: int = 0
    message: str = ""


@dataclass(frozen=True)
class OtlpTarget:
    """Where and how to send: resolved from arguments, then ``OTEL_EXPORTER_OTLP_*``."""

    protocol: Protocol
    endpoint: str
    """gRPC: ``host:port``; HTTP: the full ``/v1/traces`` URL."""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    compression: Literal["gzip"] | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    """Seconds per attempt (the Python SDK reads ``OTEL_EXPORTER_OTLP_TIMEOUT`` in seconds too)."""
    insecure: bool = True
    """gRPC only: plaintext (``http://`` or no scheme) vs TLS (``https://``)."""
    certificate: str | None = None

    def describe(self) -> str:
        return f"OTLP/{'gRPC' if self.protocol == 'grpc' else 'HTTP'} {self.endpoint}"


def _env(env: Mapping[str, str], name: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_TRACES_<name>``, else ``OTEL_EXPORTER_OTLP_<name>`` (spec order)."""
    for key in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = env.get(key)
        if value is not None and value.strip() != "":
            return value.strip()
    return None


def _protocol(value: str) -> Protocol:
    v = value.strip().lower()
    if v == "grpc":
        return "grpc"
    if v in ("http/protobuf", "http"):
        return "http/protobuf"
    raise ValueError(
        f"OTLP protocol {value!r} is not supported by the store exporter "
        "(agentLightning.exporter.protocol / OTEL_EXPORTER_OTLP_PROTOCOL): "
        "use grpc or http/protobuf"
    )


def resolve_target(
    protocol: str | None = None,
    endpoint: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    compression: str | None = None,
    timeout: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> OtlpTarget:
    """Arguments win over the environment; the environment over the OTLP defaults.

    Endpoint: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is), else
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (HTTP: plus ``/v1/traces``), else ``localhost:4317`` /
    ``http://localhost:4318/v1/traces``. ``HEADERS`` (``k=v,k2=v2``) are merged under the
    explicit ``headers``; ``COMPRESSION`` is ``gzip`` or ``none``; ``TIMEOUT`` is in seconds;
    gRPC is plaintext unless the endpoint is ``https://`` (or ``INSECURE=false``).
    """
    env = os.environ if environ is None else environ
    proto = _protocol(protocol or _env(env, "PROTOCOL") or "grpc")
    traces_specific = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    raw = endpoint or traces_specific or generic
    scheme = urlsplit(raw).scheme if "://" in raw else ""
    if proto == "grpc":
        if not raw:
            raw = "localhost:4317"
        parts = urlsplit(raw if "://" in raw else f"//{raw}")
        address = parts.netloc or raw
        insecure_env = _env(env, "INSECURE")
        if scheme == "https":
            insecure = False
        elif scheme == "http":
            insecure = True
        elif insecure_env is not None:
            insecure = parse_flag(insecure_env)
        else:
            insecure = True  # "host:port": a local Collector or store, plaintext
        url = address
    else:
        insecure = scheme != "https"
        if not raw:
            url = "http://localhost:4318/v1/traces"
        else:
            url = raw if "://" in raw else f"http://{raw}"
            explicit_path = endpoint is not None or bool(traces_specific)
            if urlsplit(url).path in ("", "/") or not explicit_path:
                url = url.rstrip("/") + "/v1/traces"
    merged = dict(parse_env_headers(_env(env, "HEADERS") or "", liberal=True))
    merged.update({k.lower(): v for k, v in (headers or {}).items()})
    comp = (compression or _env(env, "COMPRESSION") or "none").lower()
    if comp not in ("gzip", "none"):
        raise ValueError(
            f"OTLP compression {comp!r} is not supported (OTEL_EXPORTER_OTLP_COMPRESSION): "
            "use gzip or none"
        )
    raw_timeout = _env(env, "TIMEOUT")
    t = timeout if timeout is not None else float(raw_timeout) if raw_timeout else DEFAULT_TIMEOUT_S
    return OtlpTarget(
        protocol=proto,
        endpoint=url,
        headers=merged,
        compression="gzip" if comp == "gzip" else None,
        timeout=t,
        insecure=insecure,
        certificate=_env(env, "CERTIFICATE"),
    )


def _parse_response(body: bytes) -> SendResult:
    if not body:
        return SendResult()
    response = ExportTraceServiceResponse()
    try:
        response.ParseFromString(body)
    except Exception:  # a non-OTLP 200 answer: the batch was taken
        return SendResult()
    ps = response.partial_success
    return SendResult(rejected=int(ps.rejected_spans), message=ps.error_message)


class GrpcSender:
    """One gRPC channel; ``send`` is one unary Export call with raw request bytes."""

    def __init__(self, target: OtlpTarget) -> None:
        self.target = target
        options = [
            # Reconnect soon after the target comes back (gRPC's default backoff grows to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.enable_retries", 0),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
        compression = grpc.Compression.Gzip if target.compression == "gzip" else None
        if target.insecure:
            self._channel = grpc.insecure_channel(
                target.endpoint, options=options, compression=compression
            )
        else:
            root = None
            if target.certificate:
                with open(target.certificate, "rb") as f:
                    root = f.read()
            creds = grpc.ssl_channel_credentials(root_certificates=root)
            self._channel = grpc.secure_channel(
                target.endpoint, creds, options=options, compression=compression
            )
        self._call = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )
        self._metadata = tuple(target.headers.items())

    def send(self, payload: bytes, timeout: float) -> SendResult:
        try:
            body = self._call(payload, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
            details = e.details() if hasattr(e, "details") else str(e)
            raise SendError(
                f"{self.target.describe()}: {code.name if code else 'UNKNOWN'}: {details}",
                retryable=code in RETRYABLE_GRPC,
            ) from None
        return _parse_response(body)

    def close(self) -> None:
        self._channel.close()


class HttpSender:
    """``POST`` of ``application/x-protobuf`` bodies; one httpx client per calling thread."""

    def __init__(self, target: OtlpTarget) -> None:
        self.target = target
        self._headers = {"content-type": "application/x-protobuf", **target.headers}
        if target.compression == "gzip":
            self._headers["content-encoding"] = "gzip"
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()
        verify: str | bool = target.certificate or True

        def new_client() -> httpx.Client:
            client = httpx.Client(verify=verify, headers=self._headers)
            with self._lock:
                self._clients.append(client)
            return client

        self._new_client = new_client

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._new_client()
        return client

    def send(self, payload: bytes, timeout: float) -> SendResult:
        body = gzip.compress(payload, compresslevel=5) if self.target.compression else payload
        try:
            r = self._client().post(self.target.endpoint, content=body, timeout=timeout)
        except httpx.HTTPError as e:
            raise SendError(
                f"{self.target.describe()}: {type(e).__name__}: {e}", retryable=True
            ) from None
        if r.status_code == 200:
            return _parse_response(r.content)
        retryable = r.status_code in RETRYABLE_HTTP
        raise SendError(
            f"{self.target.describe()}: HTTP {r.status_code}: {r.text[:200]!r}", retryable=retryable
        )

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            c.close()


def make_sender(target: OtlpTarget) -> GrpcSender | HttpSender:
    return GrpcSender(target) if target.protocol == "grpc" else HttpSender(target)
