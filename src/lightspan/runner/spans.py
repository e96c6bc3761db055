"""The runner's own span pipeline: spans kept per attempt and delivered before its status.

Why not the process-wide tracing pipeline: an optimizer reads an attempt's spans right after
``wait_for_rollouts`` says the rollout finished, so every span of the attempt must be in the
store *before* ``update_attempt`` marks it finished. A batching exporter cannot promise that
per attempt (and may point at a Collector). Here the runner owns a tracer provider whose only
processor keeps finished spans by ``(rollout_id, attempt_id)`` (:class:`AttemptSpanBuffer`);
when the run returns (every span of it has ended, by the engine's structured concurrency), the
runner delivers that attempt's spans and waits for the store's answer (:class:`SpanSink`), then
updates the attempt. Long attempts also deliver what they have at each heartbeat.

Delivery: as OTLP/protobuf bytes either way: to an in-process store object through the store's
own conversion (``lightspan.store.intake.convert``); to a store server (ours or Agent Lightning's
``agl store``) as one OTLP/HTTP request per delivery (``/v1/traces``), not one REST call per span.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from lightspan import __version__
from lightspan.exporter.encode import SpanEncoder
from lightspan.instrumentation.instrumentor import SCHEMA_URL
from lightspan.instrumentation.listener import SpanListener
from lightspan.semconv import ATTEMPT_ID, ROLLOUT_ID
from lightspan.store.api.base import LightningStore

__all__ = ["AttemptSpanBuffer", "DeliveryResult", "SpanSink", "runner_tracing"]


class AttemptSpanBuffer(SpanProcessor):
    """Keeps ended spans by ``(rollout_id, attempt_id)`` until the runner takes them."""

    def __init__(self) -> None:
        self._spans: dict[tuple[str, str], list[ReadableSpan]] = {}
        self._lock = threading.Lock()
        self.unowned = 0
        """Spans without rollout ids (never expected from the runner's listener)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes or {}
        rollout_id, attempt_id = attrs.get(ROLLOUT_ID), attrs.get(ATTEMPT_ID)
        if not isinstance(rollout_id, str) or not isinstance(attempt_id, str):
            self.unowned += 1
            return
        key = (rollout_id, attempt_id)
        with self._lock:
            spans = self._spans.get(key)
            if spans is None:
                self._spans[key] = [span]
            else:
                spans.append(span)

    def take(self, rollout_id: str, attempt_id: str) -> list[ReadableSpan]:
        """Remove and return the attempt's spans, in the order they ended."""
        with self._lock:
            return self._spans.pop((rollout_id, attempt_id), [])

    def put_back(self, rollout_id: str, attempt_id: str, spans: list[ReadableSpan]) -> None:
        """Return spans whose delivery failed (ahead of any that ended since)."""
        if not spans:
            return
        with self._lock:
            later = self._spans.get((rollout_id, attempt_id), [])
            self._spans[(rollout_id, attempt_id)] = spans + later

    def pending(self, rollout_id: str, attempt_id: str) -> int:
        with self._lock:
            return len(self._spans.get((rollout_id, attempt_id), ()))

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def runner_tracing(
    *, capture_content: bool = True, service_name: str = "lightspan-runner"
) -> tuple[TracerProvider, AttemptSpanBuffer, SpanListener]:
    """A private tracer provider (always sampled), its buffer, and the listener the runner
    passes to each run (prompts and completions captured by default: optimizers need them)."""
    buffer = AttemptSpanBuffer()
    provider = TracerProvider(
        resource=Resource.create(
            {SERVICE_NAME: service_name, "agentlightning.tracer.name": "lightspan"}
        )
    )
    provider.add_span_processor(buffer)
    tracer = provider.get_tracer("lightspan.runner", __version__, schema_url=SCHEMA_URL)
    listener = SpanListener(
        tracer, capture_content=capture_content, capture_runner_content=capture_content
    )
    return provider, buffer, listener


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    sent: int
    rejected: int
    message: str = ""


class SpanSink:
    """Delivers SDK spans to a store and returns once the store has them (or raises).

    To a store server, deliveries of several attempts that are due at the same time share one
    OTLP/HTTP request (``coalesce``, the default): a delivery that arrives while a request is
    in flight waits for the next one, which carries every delivery queued meanwhile (up to
    ``max_batch`` spans per request). Each caller still returns only once the request holding
    its spans was acknowledged, and gets the error if it failed, so the runner's order (spans,
    then status) holds per attempt. A rejection count in OTLP's answer is for the whole request:
    it is reported to the first delivery of the request (the totals stay right)."""

    def __init__(
        self, store: LightningStore, *, max_batch: int = 1000, coalesce: bool = True
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.coalesce = coalesce
        from lightspan.store.api.client import LightningStoreClient

        self._remote = isinstance(store, LightningStoreClient)
        self._encoder = SpanEncoder()
        self._queue: list[tuple[Sequence[ReadableSpan], asyncio.Future[DeliveryResult]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.requests = 0
        """OTLP requests sent (for benchmarks and tests)."""

    async def send(
        self, spans: Sequence[ReadableSpan], rollout_id: str, attempt_id: str
    ) -> DeliveryResult:
        if not spans:
            return DeliveryResult(0, 0)
        if self._remote:
            if not self.coalesce:
                rejected, message = await self._export(spans)
                return DeliveryResult(len(spans), rejected, message)
            fut: asyncio.Future[DeliveryResult] = asyncio.get_running_loop().create_future()
            self._queue.append((spans, fut))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush(), name="lightspan-span-sink")
            return await asyncio.shield(fut)
        from lightspan.store.intake.convert import convert
        from lightspan.store.intake.ingest import ingest

        # The buffer keeps a span under the ids it carries (AttemptSpanBuffer.on_end), so the
        # encoded spans name their rollout and attempt themselves.
        converted = convert(self._encoder.encode_request(spans))
        result = await ingest(self.store, converted)
        return DeliveryResult(len(spans), result.rejected, result.message or "")

    async def _export(self, spans: Sequence[ReadableSpan]) -> tuple[int, str]:
        rejected, messages = 0, []
        # In order, in requests of at most max_batch spans (servers bound request sizes).
        for i in range(0, len(spans), self.max_batch):
            body = self._encoder.encode_request(spans[i : i + self.max_batch])
            self.requests += 1
            n, message = await self.store.export_otlp(body)  # type: ignore[attr-defined]
            rejected += n
            if message:
                messages.append(message)
        return rejected, "; ".join(messages)

    async def _flush(self) -> None:
        while self._queue:
            # Whole deliveries, up to max_batch spans (a larger single delivery goes alone and
            # is split by _export).
            batch: list[tuple[Sequence[ReadableSpan], asyncio.Future[DeliveryResult]]] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0][0]) <= self.max_batch):
                item = self._queue.pop(0)
                batch.append(item)
                size += len(item[0])
            spans = [s for part, _ in batch for s in part]
            try:
                rejected, message = await self._export(spans)
            except BaseException as e:
                for _, fut in batch + (self._queue if not isinstance(e, Exception) else []):
                    if not fut.done():
                        fut.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
                if not isinstance(e, Exception):
                    self._queue.clear()
                    raise
                continue
            for i, (part, fut) in enumerate(batch):
                if not fut.done():
                    fut.set_result(DeliveryResult(len(part), rejected if i == 0 else 0, message))
