"""OTLP/HTTP trace intake at ``/v1/traces`` (protobuf or JSON, optionally gzip-compressed).

Why its own module: the body handling (size limit enforced while reading and while inflating,
so a small gzip bomb cannot exhaust memory; content types; OTLP's error body, a
``google.rpc.Status``) is transport detail that the shared intake (:mod:`.intake`) must not see.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import TYPE_CHECKING

from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lightspan.store.api.base import LightningStore
from lightspan.store.intake.convert import convert_async, json_to_protobuf
from lightspan.store.intake.ingest import ingest
from lightspan.store.intake.otlp import OtlpDecodeError

if TYPE_CHECKING:
    from lightspan.store.server.metrics import StoreMetrics

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "PayloadTooLarge", "otlp_http_routes", "read_limited"]

logger = logging.getLogger("lightspan.store.intake.otlp_http")

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf"})


class PayloadTooLarge(Exception):
    """The request (raw or inflated) is larger than the configured limit."""


def _status_response(code: int, message: str, content_type: str) -> Response:
    """An OTLP error answer: a ``google.rpc.Status`` in the request's encoding."""
    status = Status(message=message)
    if content_type == JSON:
        body = json_format.MessageToJson(status).encode()
    else:
        body = status.SerializeToString()
        content_type = PROTOBUF
    return Response(body, status_code=code, media_type=content_type)


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused (:class:`PayloadTooLarge`) as soon as it passes ``limit``
    bytes: by its Content-Length, else while it streams in (REST bodies use it too)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OtlpDecodeError(f"unsupported Content-Encoding {encoding!r} (use gzip or none)")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpDecodeError(f"body is not valid {encoding} data: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    return out


def otlp_http_routes(
    store: LightningStore, max_request_bytes: int, metrics: StoreMetrics | None = None
) -> list[BaseRoute]:
    """``POST /v1/traces`` plus 501 answers for ``/v1/metrics`` and ``/v1/logs``."""

    async def traces(request: Request) -> Response:
        started = time.perf_counter()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in _PROTOBUF_TYPES:
            kind = PROTOBUF
        elif content_type == JSON:
            kind = JSON
        else:
            return _status_response(
                415,
                f"unsupported Content-Type {content_type!r}; OTLP/HTTP takes {PROTOBUF} or {JSON}",
                PROTOBUF,
            )
        try:
            raw = await read_limited(request, max_request_bytes)
            body = _inflate(
                raw, request.headers.get("content-encoding", "").strip().lower(), max_request_bytes
            )
            if kind == JSON:
                body = json_to_protobuf(body)
            converted = await convert_async(body)
        except PayloadTooLarge as exc:
            return _status_response(413, str(exc), kind)
        except OtlpDecodeError as exc:
            return _status_response(400, str(exc), kind)
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            result = await ingest(store, converted)
            if metrics is not None:
                metrics.record_export("http", result, started)
        except Exception as exc:
            # Nothing of this batch is acknowledged; 503 tells OTLP exporters to retry it.
            logger.exception("OTLP/HTTP export failed in the store")
            return _status_response(503, f"store failed: {type(exc).__name__}: {exc}", kind)
        response = result.to_response()
        if kind == JSON:
            payload = json_format.MessageToJson(response).encode()
        else:
            payload = response.SerializeToString()
        return Response(payload, status_code=200, media_type=kind)

    async def not_implemented(request: Request) -> Response:
        return _status_response(501, f"{request.url.path} is not supported by this store", PROTOBUF)

    return [
        Route("/v1/traces", traces, methods=["POST"]),
        Route("/v1/metrics", not_implemented, methods=["POST"]),
        Route("/v1/logs", not_implemented, methods=["POST"]),
    ]
