"""The LightningStore server: REST (``/v1/agl``) and OTLP/HTTP on one port, OTLP/gRPC on another.

Why one process serving both transports over one store object: the store's invariants (a rollout
is dequeued once, sequence ids are issued once) hold within one store; several servers share
state only through a PostgreSQL database, never through each other.

Shutdown is graceful: on SIGTERM/SIGINT the server stops accepting connections, lets in-flight
HTTP requests and gRPC calls finish (up to ``graceful_timeout`` seconds), then closes the store.
A span batch is acknowledged only after the store made it durable, so even SIGKILL loses nothing
that was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from lightspan.store.api.base import LightningStore
from lightspan.store.intake.otlp_grpc import create_grpc_server
from lightspan.store.intake.otlp_http import DEFAULT_MAX_REQUEST_BYTES, otlp_http_routes
from lightspan.store.server.auth import BearerAuthMiddleware, resolve_token
from lightspan.store.server.metrics import StoreMetrics
from lightspan.store.server.rest import API_PREFIX, rest_routes

if TYPE_CHECKING:
    from lightspan.store.server.dashboard_fetch import DashboardFiles

__all__ = ["DEFAULT_GRPC_PORT", "DEFAULT_PORT", "StoreServer", "create_app"]

logger = logging.getLogger("lightspan.store.server.app")

DEFAULT_PORT = 4747
DEFAULT_GRPC_PORT = 4317


def create_app(
    store: LightningStore,
    *,
    token: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    metrics: StoreMetrics | None = None,
    dashboard: DashboardFiles | None = None,
    cors_origins: Sequence[str] = (),
) -> Starlette:
    """The ASGI app: REST API, OTLP/HTTP intake, ``/metrics``, optional bearer-token check,
    optional web dashboard (:mod:`.dashboard`) and CORS.

    CORS wraps the token check so that preflights (which never carry a token) are answered and
    a 401 still tells the browser which origins may read it. The store's lifecycle
    (start/close) belongs to the caller (see :class:`StoreServer`).
    """
    metrics = metrics or StoreMetrics(store)
    middleware = [Middleware(metrics.middleware)]
    origins = _cors_origins(cors_origins)
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        # Agent Lightning's store server uses the same settings.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["*"],
                allow_headers=["*"],
                allow_credentials=True,
                expose_headers=["*"],
            )
        )
    routes = [
        *rest_routes(store, max_request_bytes),
        *otlp_http_routes(store, max_request_bytes, metrics),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    if dashboard is not None:
        from lightspan.store.server.dashboard import DashboardAuthMiddleware, dashboard_routes

        routes += dashboard_routes(dashboard, token)
        if token:
            middleware.append(Middleware(DashboardAuthMiddleware, token=token))
    elif token:
        middleware.append(Middleware(BearerAuthMiddleware, token=token))
    return Starlette(routes=routes, middleware=middleware)


def _cors_origins(origins: Sequence[str]) -> list[str]:
    """Origins as Agent Lightning normalises them: blanks dropped, ``*`` wins over the rest."""
    cleaned = [o.strip() for o in origins if o and o.strip()]
    return ["*"] if "*" in cleaned else cleaned


_GC_GEN0_THRESHOLD = 50_000


def _tune_gc() -> None:
    """Garbage-collector settings for an ingesting server (process-wide, so only here).

    OTLP intake allocates ~10 containers per span that all die within the batch: with the
    default young-generation threshold (700) the collector ran every ~60 spans and traversed
    them (measured: ~15% of ingestion time); with 50,000 almost none of it is ever traversed.
    ``gc.freeze()`` moves everything allocated so far (modules, classes, the app), which lives
    as long as the server, out of the full collections. Cyclic garbage is still collected."""
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0:  # 0 means the collector is off: leave it so
        gc.set_threshold(max(gen0, _GC_GEN0_THRESHOLD), gen1, gen2)


# glibc mallopt parameters (malloc.h) and the values the server process uses.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MALLOC_SETTINGS = (
    (_M_MMAP_THRESHOLD, 64 << 20),
    (_M_TRIM_THRESHOLD, 128 << 20),
    (_M_TOP_PAD, 16 << 20),
)


def _tune_malloc() -> bool:
    """Keep freed memory in the heap instead of handing it back to the kernel (glibc only;
    process-wide, so only here). Returns whether the settings were applied.

    Why: each span batch allocates and frees a few MB (request bodies, documents, chunks), and
    by default glibc serves blocks above 128 KB with fresh ``mmap`` pages and trims the heap
    after frees, so every batch faults its pages in again. On the virtual machines we measure
    on a page fault costs ~10 us: measured, a 10,000-span read went from 86-90 ms to 51-60 ms
    and ingestion gained 5-15% (benchmarks/store_ingest.py, with ``MALLOC_*`` variables set).
    The cost is up to ~128 MB of freed memory kept for reuse. ``MALLOC_*`` variables still
    take effect (glibc reads them first; these calls then override the three values)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    return all(mallopt(param, value) == 1 for param, value in _MALLOC_SETTINGS)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: :class:`StoreServer` owns shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class StoreServer:
    """Runs the store, the HTTP server and the gRPC server in the current event loop."""

    def __init__(
        self,
        store: LightningStore,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        grpc_port: int | None = DEFAULT_GRPC_PORT,
        token: str | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        graceful_timeout: float = 10.0,
        access_log: bool = False,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        dashboard: DashboardFiles | None = None,
        cors_origins: Sequence[str] = (),
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        self.tls: tuple[bytes, bytes] | None = None
        if tls_cert is not None and tls_key is not None:
            # Read now: a missing or unreadable file is an error before anything listens.
            try:
                self.tls = (Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())
            except OSError as exc:
                raise OSError(f"cannot read the TLS certificate or key: {exc}") from exc
        self.store = store
        self.host = host
        self.port = port
        self.grpc_port = grpc_port
        self.token = resolve_token(token)
        self.max_request_bytes = max_request_bytes
        self.graceful_timeout = graceful_timeout
        self.metrics = StoreMetrics(store)
        self.dashboard = dashboard
        self.app = create_app(
            store,
            token=self.token,
            max_request_bytes=max_request_bytes,
            metrics=self.metrics,
            dashboard=dashboard,
            cors_origins=cors_origins,
        )
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            access_log=access_log,
            lifespan="off",
            timeout_graceful_shutdown=graceful_timeout,
            # One batch of 512 spans is ~250 kB; keep-alive connections from exporters are reused.
            timeout_keep_alive=30,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
        )
        self._http = _Uvicorn(config)
        self._grpc: Any = None
        self._http_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        """Open the store, then listen on both ports; returns once both accept connections."""
        await self.store.start()
        try:
            await self._listen()
        except BaseException:
            if self._grpc is not None:
                await self._grpc.stop(None)
            await self.store.close()
            raise
        tls = " (TLS)" if self.tls else ""
        grpc_note = f", OTLP/gRPC on {self.host}:{self.grpc_port}{tls}" if self._grpc else ""
        auth_note = " (bearer token required)" if self.token else ""
        logger.info(
            "lightspan store serving REST %s%s and OTLP/HTTP %s/v1/traces%s%s",
            self.endpoint,
            API_PREFIX,
            self.endpoint,
            grpc_note,
            auth_note,
        )
        if self.dashboard is not None:
            how = (
                " (sign in with the store's token; the session is read-only)" if self.token else ""
            )
            logger.warning("dashboard: open %s/ in a browser%s", self.endpoint, how)

    async def _serve_http(self) -> None:
        try:
            await self._http.serve()
        except SystemExit:  # uvicorn logs a bind error, then exits; keep the loop alive
            raise OSError(f"cannot listen for HTTP on {self.endpoint} (see above)") from None

    async def _listen(self) -> None:
        if self.grpc_port is not None:
            self._grpc, self.grpc_port = create_grpc_server(
                self.store,
                f"{self.host}:{self.grpc_port}",
                token=self.token,
                max_request_bytes=self.max_request_bytes,
                tls=self.tls,
                metrics=self.metrics,
            )
            await self._grpc.start()
        self._http_task = asyncio.create_task(self._serve_http(), name="lightspan-store-http")
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # raises the bind error
                raise OSError(f"cannot listen for HTTP on {self.endpoint}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests, close the store. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.graceful_timeout
        waits = []
        if self._grpc is not None:
            waits.append(self._grpc.stop(grace))
        if self._http_task is not None:
            self._http.should_exit = True
            waits.append(self._http_task)
        await asyncio.gather(*waits, return_exceptions=True)
        await self.store.close()
        logger.info("lightspan store stopped")

    async def serve_forever(self) -> None:
        """Start, then run until SIGTERM/SIGINT, then stop gracefully (as the server process:
        the garbage collector is tuned for ingestion, see :func:`_tune_gc`).

        The signal handlers come first: the server answers its health check as soon as
        :meth:`start` returns, and a SIGTERM sent then (a supervisor, a test stopping it at
        once) must still stop it gracefully, not kill it (it did, on a loaded machine, when
        the handlers came after :meth:`start` and the tuning below)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
        except BaseException:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            raise
        _tune_gc()
        _tune_malloc()
        try:
            assert self._http_task is not None
            http_done = self._http_task
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, http_done}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()


if __name__ == "__main__":  # python -m lightspan.store.server.app serve ...
    from lightspan.store.server.cli import main

    raise SystemExit(main())
