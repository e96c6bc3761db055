"""Optional bearer-token authentication for the store server (REST, OTLP/HTTP and OTLP/gRPC).

Why a module of its own: both transports must apply the same rule (every route needs the token
except the health check, which load balancers and the reference client probe without one) and
compare it the same way (constant time). The token itself is never logged or echoed: error
messages say only that it is missing or wrong.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "TOKEN_ENV",
    "BearerAuthMiddleware",
    "GrpcBearerAuthInterceptor",
    "resolve_token",
    "token_matches",
]

TOKEN_ENV = "LIGHTSPAN_STORE_TOKEN"
OPEN_PATHS = frozenset({"/v1/agl/health"})


def resolve_token(explicit: str | None) -> str | None:
    """The token to require: the explicit one, else ``$LIGHTSPAN_STORE_TOKEN``, else none."""
    token = explicit if explicit else os.environ.get(TOKEN_ENV)
    return token or None


def token_matches(header_value: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>`` (constant-time compare)."""
    if not header_value:
        return False
    scheme, _, given = header_value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class BearerAuthMiddleware:
    """ASGI middleware: 401 unless the request carries the token (health check exempt)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if token_matches(header, self.token):
            await self.app(scope, receive, send)
            return
        detail = "missing bearer token" if header is None else "invalid bearer token"
        body = b'{"detail":"' + detail.encode() + b'"}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="lightspan-store"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class GrpcBearerAuthInterceptor(grpc.aio.ServerInterceptor):
    """gRPC server interceptor: ``UNAUTHENTICATED`` unless metadata carries the token."""

    def __init__(self, token: str) -> None:
        self.token = token

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        header = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
                break
        if token_matches(header, self.token):
            return await continuation(handler_call_details)
        return self._deny
