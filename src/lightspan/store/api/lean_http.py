"""A lean HTTP/1.1 POST for the store client's hot request (a runner's ``runner/exchange``).

Why: httpx's client and connection pool cost ~0.7-0.8 ms of CPU per request on the machines we
measure on (URL and header models, the pool's bookkeeping, anyio layers), several times the
request's own work; a runner sends one such request per few rollouts, and that overhead was a
fifth of its CPU per rollout. This module sends a POST over keep-alive connections with h11
(httpx's own HTTP/1.1 parser) on asyncio streams: ~0.17 ms (``benchmarks/runner.py``).

Scope, so that it never behaves differently from httpx: plain ``http://`` only, and only when
no proxy applies to the address (``*_PROXY``/``NO_PROXY``); otherwise :func:`usable` is False
and the client keeps httpx. Failures raise httpx's own exception types (``ConnectError`` when
the request was not sent, ``ReadError``/``RemoteProtocolError``/``ReadTimeout`` after), so the
client's retry policy treats both paths alike. A connection idle longer than
``max_idle_seconds`` (below servers' keep-alive timeouts) or closed by the server is not reused.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx

__all__ = ["LeanPool", "LeanResponse", "usable"]


def usable(url: str) -> bool:
    """Whether :class:`LeanPool` may serve ``url`` (plain HTTP, no proxy configured for it)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get("http") or proxies.get("all")):
        return True
    return bool(urllib.request.proxy_bypass_environment(parts.hostname))


@dataclass(slots=True)
class LeanResponse:
    """The parts of an ``httpx.Response`` the store client reads."""

    status_code: int
    content: bytes
    reason_phrase: str = ""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        import json

        return json.loads(self.content)


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection
    idle_since: float


class LeanPool:
    """Keep-alive connections to one ``http://host:port`` for one event loop."""

    def __init__(self, base_url: str, headers: dict[str, str], *, max_idle_seconds: float = 4.0):
        parts = urlsplit(base_url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 80
        self.host_header = parts.netloc
        self.headers = [(k, v) for k, v in headers.items()]
        self.max_idle_seconds = max_idle_seconds
        self._idle: list[_Conn] = []

    async def post(
        self, path: str, body: bytes, *, read_timeout: float, connect_timeout: float
    ) -> LeanResponse:
        conn = self._reusable()
        if conn is None:
            try:
                async with asyncio.timeout(connect_timeout):
                    reader, writer = await asyncio.open_connection(self.host, self.port)
            except TimeoutError as exc:
                raise httpx.ConnectTimeout(f"connecting to {self.host}:{self.port}") from exc
            except OSError as exc:
                raise httpx.ConnectError(str(exc)) from exc
            conn = _Conn(reader, writer, h11.Connection(h11.CLIENT), 0.0)
        try:
            async with asyncio.timeout(read_timeout):
                response = await self._exchange(conn, path, body)
        except TimeoutError as exc:
            conn.writer.close()
            raise httpx.ReadTimeout(f"no answer from {self.host}:{self.port}") from exc
        except (OSError, h11.ProtocolError) as exc:
            conn.writer.close()
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.writer.close()
            raise
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.writer.close()
        return response

    def _reusable(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if (
                now - conn.idle_since < self.max_idle_seconds
                and not conn.reader.at_eof()
                and not conn.writer.is_closing()
            ):
                return conn
            conn.writer.close()
        return None

    async def _exchange(self, conn: _Conn, path: str, body: bytes) -> LeanResponse:
        c = conn.h11
        data = c.send(
            h11.Request(
                method="POST",
                target=path,
                headers=[
                    ("Host", self.host_header),
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    *self.headers,
                ],
            )
        )
        data = (data or b"") + (c.send(h11.Data(data=body)) or b"")
        data += c.send(h11.EndOfMessage()) or b""
        conn.writer.write(data)
        status, reason, chunks = 0, "", []
        while True:
            event = c.next_event()
            if event is h11.NEED_DATA:
                received = await conn.reader.read(65536)
                if not received:
                    raise httpx.RemoteProtocolError("server closed the connection")
                c.receive_data(received)
            elif isinstance(event, h11.Response):
                status, reason = event.status_code, event.reason.decode("ascii", "replace")
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return LeanResponse(status, b"".join(chunks), reason)
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("server closed the connection")

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.writer.close()
