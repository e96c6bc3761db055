"""OTLP/gRPC trace intake: ``opentelemetry.proto.collector.trace.v1.TraceService/Export``.

Why a raw-bytes handler instead of the generated servicer: grpcio answers an undecodable request
with an opaque ``INTERNAL`` before our code runs; parsing it ourselves lets a malformed body get
``INVALID_ARGUMENT`` with a message, as OTLP asks. Oversize messages are refused by grpcio itself
(``max_receive_message_length``) with ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from lightspan.store.api.base import LightningStore
from lightspan.store.intake.convert import convert_async
from lightspan.store.intake.ingest import ingest
from lightspan.store.intake.otlp import OtlpDecodeError
from lightspan.store.server.auth import GrpcBearerAuthInterceptor

if TYPE_CHECKING:
    from lightspan.store.server.metrics import StoreMetrics

__all__ = ["SERVICE_NAME", "create_grpc_server"]

SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"
logger = logging.getLogger("lightspan.store.grpc")


def _export_handler(store: LightningStore, metrics: StoreMetrics | None) -> grpc.RpcMethodHandler:
    def count(code: grpc.StatusCode) -> None:
        if metrics is not None:
            metrics.grpc_requests.labels(code.name).inc()

    async def export(request: bytes, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            converted = await convert_async(request)
        except OtlpDecodeError as exc:
            count(grpc.StatusCode.INVALID_ARGUMENT)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            result = await ingest(store, converted)
        except Exception as exc:
            # Nothing acknowledged; UNAVAILABLE is retryable for OTLP exporters.
            logger.exception("OTLP/gRPC export failed in the store")
            count(grpc.StatusCode.UNAVAILABLE)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"store failed: {type(exc).__name__}: {exc}"
            )
        count(grpc.StatusCode.OK)
        if metrics is not None:
            metrics.record_export("grpc", result, started)
        return result.to_response()

    return grpc.unary_unary_rpc_method_handler(
        export,
        request_deserializer=None,  # raw bytes: we decode (see the module docstring)
        response_serializer=ExportTraceServiceResponse.SerializeToString,
    )


def create_grpc_server(
    store: LightningStore,
    address: str,
    *,
    token: str | None = None,
    max_request_bytes: int,
    tls: tuple[bytes, bytes] | None = None,
    metrics: StoreMetrics | None = None,
) -> tuple[grpc.aio.Server, int]:
    """An aio gRPC server serving the trace Export on ``address``; returns it and its port.
    ``tls``: (private key, certificate chain) in PEM, to serve over TLS."""
    interceptors = [GrpcBearerAuthInterceptor(token)] if token else []
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
    )
    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME, {"Export": _export_handler(store, metrics)}
    )
    server.add_generic_rpc_handlers((handler,))
    try:
        if tls is not None:
            port = server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio reports a busy port this way
        raise OSError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    return server, port
