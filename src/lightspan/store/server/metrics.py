"""Prometheus metrics of the store server, served at ``GET /metrics`` (text exposition format).

Why prometheus-client and its conventions (``_total`` counters, ``_seconds`` histograms, one
registry per server): operators scrape stores with the tools they already run, and a store's
health is read from intake rates, rejections, error statuses and the queue, not from logs.
The registry is per server (not the library's global one) so several servers, or tests, in one
process do not mix their counts. Gauges read from the store (rollouts by status, queue depth,
database size, the SQL backends' span-id cache) are refreshed at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightspan.store.api.base import LightningStore
from lightspan.store.api.models import RolloutStatus

__all__ = ["StoreMetrics"]

_ROLLOUT_STATUSES: tuple[str, ...] = get_args(RolloutStatus)
_QUEUED = ("queuing", "requeuing")


def _api(path: str) -> str:
    """A bounded label for a request path (raw paths would make unbounded label values)."""
    if path.startswith("/v1/agl"):
        return "rest"
    if path in ("/v1/traces", "/v1/metrics", "/v1/logs"):
        return "otlp_http"
    if path == "/metrics":
        return "metrics"
    return "other"


class _SpanIdCacheCollector:
    """The SQL backends' span-id cache (docs/store.md, "The span-id cache and large attempts"):
    ids held, its bound, and ids read back from disk, whose rate nearing the stored spans' rate
    says the bound is too small for the attempts in flight."""

    def __init__(self, store: LightningStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        cache = getattr(self.store, "span_id_cache", None)
        if cache is None:  # the memory backend keeps no such cache
            return
        yield GaugeMetricFamily(
            "lightspan_store_span_id_cache_ids",
            "Span ids held for the duplicate check",
            value=len(cache),
        )
        yield GaugeMetricFamily(
            "lightspan_store_span_id_cache_limit",
            "Bound of the span-id cache (lightspan store serve --span-id-cache)",
            value=cache.max_spans,
        )
        yield CounterMetricFamily(
            "lightspan_store_span_ids_reread",
            "Span ids read back from disk for attempts not in the span-id cache",
            value=cache.ids_reread,
        )


def _file_sizes(*paths: Path) -> int:
    """Bytes of the files that exist (two stat calls: not worth a thread hop)."""
    return sum(p.stat().st_size for p in paths if p.exists())


class StoreMetrics:
    """The server's metrics; the intakes record into it, ``/metrics`` renders it."""

    def __init__(self, store: LightningStore) -> None:
        self.store = store
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # RSS, CPU seconds, open fds of the server process
        r.register(_SpanIdCacheCollector(store))
        self.spans = Counter(
            "lightspan_store_spans",
            "Spans received over OTLP, by transport and outcome (stored, duplicate, rejected)",
            ["transport", "outcome"],
            registry=r,
        )
        self.http_requests = Counter(
            "lightspan_store_http_requests",
            "HTTP requests answered, by API (rest, otlp_http, metrics, other) and status code",
            ["api", "status"],
            registry=r,
        )
        self.grpc_requests = Counter(
            "lightspan_store_grpc_requests",
            "OTLP/gRPC Export calls answered, by status code",
            ["code"],
            registry=r,
        )
        self.intake_seconds = Histogram(
            "lightspan_store_intake_seconds",
            "Time to convert and store one OTLP export request (until it is acknowledged)",
            ["transport"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.rollouts = Gauge(
            "lightspan_store_rollouts", "Rollouts by status", ["status"], registry=r
        )
        self.queue_depth = Gauge(
            "lightspan_store_queue_depth",
            "Rollouts waiting to be dequeued (status queuing or requeuing)",
            registry=r,
        )
        self.database_bytes = Gauge(
            "lightspan_store_database_bytes",
            "Size of the database on disk (SQLite: the file and its WAL; absent otherwise)",
            registry=r,
        )

    def record_export(self, transport: str, result: Any, started: float) -> None:
        """One OTLP export done: ``result`` is the intake's ``IngestResult``."""
        self.intake_seconds.labels(transport).observe(time.perf_counter() - started)
        for outcome, n in (
            ("stored", result.stored),
            ("duplicate", result.duplicates),
            ("rejected", result.rejected),
        ):
            if n:
                self.spans.labels(transport, outcome).inc(n)

    async def refresh(self) -> None:
        """Read the gauges from the store (at scrape time)."""
        counts = {}
        for status in _ROLLOUT_STATUSES:
            page = await self.store.query_rollouts(status_in=[status], limit=1)
            counts[status] = page.total
            self.rollouts.labels(status).set(page.total)
        self.queue_depth.set(sum(counts[s] for s in _QUEUED))
        path = getattr(self.store, "path", None)
        if isinstance(path, Path):
            self.database_bytes.set(_file_sizes(path, Path(f"{path}-wal")))

    async def endpoint(self, request: Request) -> Response:
        await self.refresh()
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Counts HTTP answers by API and status."""
        counter = self.http_requests

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            api = _api(scope.get("path", ""))

            async def counting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    counter.labels(api, str(message["status"])).inc()
                await send(message)

            await app(scope, receive, counting_send)

        return wrapped
