"""A batching span processor that never blocks the workflow and counts every span it loses.

Why not the SDK's ``BatchSpanProcessor``: with its defaults (queue 2,048, batch 512) spans
produced from asyncio code at full speed are dropped by the tens of percent, because the
event loop holds the interpreter and the export thread drains the small queue too late
(../shared/performance-notes.md; ``benchmarks/tracing_overhead.py`` reproduces it). Here:

* the hand-off on the workflow's thread is one ``deque.append`` (atomic under the GIL, no
  lock) plus, once per batch, an ``Event.set`` to wake the export thread;
* the queue is large (``exporter.max_queue_size``, 65,536 by default) so that the export
  thread, which only gets the interpreter every switch interval while the loop is busy, can
  fall far behind a burst and still catch up;
* each wake-up drains everything queued at that moment, not one batch;
* a full queue drops the new span (never waits), counts it, and says so in a log line at most
  every ``DROP_LOG_INTERVAL_S``; :meth:`stats` exposes the counters.

A slow or dead exporter therefore costs a workflow nothing but the lost spans, which are
counted (``dropped`` for a full queue, ``export_failed`` for batches the exporter refused).

Sizing, as the SDK's ``BatchSpanProcessor`` reads it: an argument wins, else the standard
variable, else lightspan's default: ``OTEL_BSP_MAX_QUEUE_SIZE`` (65,536),
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512), ``OTEL_BSP_SCHEDULE_DELAY`` (500 ms) and
``OTEL_BSP_EXPORT_TIMEOUT`` (30,000 ms: how long ``force_flush`` and ``shutdown`` wait for the
export thread when not told otherwise). A variable that is not a positive number is reported in
the log and its default used, as the SDK does.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from opentelemetry.context import (
    _SUPPRESS_INSTRUMENTATION_KEY,
    Context,
    attach,
    detach,
    set_value,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL_S = 10.0
"""At most one "spans dropped" warning per processor in this many seconds."""

DEFAULT_MAX_QUEUE_SIZE = 65536
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
DEFAULT_SCHEDULE_DELAY_MS = 500.0
DEFAULT_EXPORT_TIMEOUT_MS = 30000.0


def _from_env(env: Mapping[str, str], name: str, default: float, kind: type = int) -> float:
    """``kind(env[name])`` when set and positive; else ``default`` (a bad value is logged)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if value > 0:
        return value
    log.warning(
        "lightspan tracing: %s=%r is not a positive %s; using %s",
        name,
        raw,
        "integer" if kind is int else "number of milliseconds",
        default,
    )
    return default


@dataclass(frozen=True, slots=True)
class ProcessorStats:
    """Counters of one processor since it started (spans, not batches, unless named so)."""

    received: int
    """Sampled spans handed to the processor (queued or dropped)."""
    queued: int
    """Spans waiting in the queue now."""
    exported: int
    """Spans the exporter accepted."""
    dropped: int
    """Spans dropped because the queue was full or the processor was shut down."""
    export_failed: int
    """Spans in batches the exporter refused or raised on."""
    batches: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __add__(self, other: ProcessorStats) -> ProcessorStats:
        return ProcessorStats(
            *(a + b for a, b in zip(self.as_dict().values(), other.as_dict().values(), strict=True))
        )


EMPTY_STATS = ProcessorStats(0, 0, 0, 0, 0, 0)


def _value(counter: itertools.count[int]) -> int:
    """The next value an ``itertools.count`` would return, without advancing it."""
    return int(repr(counter)[6:-1])


class NonBlockingBatchProcessor(SpanProcessor):
    """Queue sampled spans and export them in batches from a daemon thread."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
        schedule_delay_ms: float | None = None,
        export_timeout_ms: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        for arg, value in (
            ("max_queue_size", max_queue_size),
            ("max_export_batch_size", max_export_batch_size),
            ("schedule_delay_ms", schedule_delay_ms),
            ("export_timeout_ms", export_timeout_ms),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"NonBlockingBatchProcessor: {arg} must be > 0, got {value}")
        env = os.environ if environ is None else environ
        queue_size = max_queue_size or int(
            _from_env(env, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE)
        )
        batch_size = max_export_batch_size or int(
            _from_env(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE)
        )
        if batch_size > queue_size:
            if max_export_batch_size is not None and max_queue_size is not None:
                raise ValueError(
                    f"NonBlockingBatchProcessor: max_export_batch_size ({batch_size}) must not "
                    f"exceed max_queue_size ({queue_size})"
                )
            # One of them came from OTEL_BSP_* or a default: a batch is at most the queue.
            batch_size = queue_size
        self.exporter = exporter
        self._max_queue = queue_size
        self._batch = batch_size
        self._delay_s = (
            schedule_delay_ms
            or _from_env(env, "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SCHEDULE_DELAY_MS, float)
        ) / 1000.0
        self._export_timeout_ms = export_timeout_ms or _from_env(
            env, "OTEL_BSP_EXPORT_TIMEOUT", DEFAULT_EXPORT_TIMEOUT_MS, float
        )
        self._queue: deque[ReadableSpan] = deque()
        # itertools.count's next() is atomic in CPython: spans may end in worker threads too.
        self._received = itertools.count()
        self._dropped = itertools.count()
        self._exported = 0
        self._failed = 0
        self._batches = 0
        self._last_drop_log = 0.0
        self._lock = threading.Lock()
        self._flush_waiters: list[threading.Event] = []
        self._wake = threading.Event()
        self._wake_pending = False
        self._shutdown = False
        self._start_thread()
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._after_fork)

            def _after_fork() -> None:
                reinit = ref()
                if reinit is not None:
                    reinit()

            os.register_at_fork(after_in_child=_after_fork)

    def _after_fork(self) -> None:
        """In a forked child: the parent exports what it queued; the child starts afresh."""
        self._queue.clear()
        self._start_thread()

    def _start_thread(self) -> None:
        """Start (or, in a forked child, restart) the export thread with fresh primitives."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flush_waiters = []
        self._thread = threading.Thread(
            target=self._worker, name="lightspan-span-export", daemon=True
        )
        self._thread.start()

    # -- the workflow's side: as cheap as possible ------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        next(self._received)
        queue = self._queue
        if len(queue) >= self._max_queue or self._shutdown:
            self._drop()
            return
        queue.append(span)
        if not self._wake_pending and len(queue) >= self._batch:
            self._wake_pending = True
            self._wake.set()

    def _drop(self) -> None:
        next(self._dropped)
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            log.warning(
                "lightspan tracing: %s; %d span(s) dropped so far by this processor "
                "(exporter %s too slow or unreachable?)",
                "processor is shut down"
                if self._shutdown
                else f"span queue full ({self._max_queue})",
                self.dropped,
                type(self.exporter).__name__,
            )

    # -- the export thread ---------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            self._wake_pending = False
            with self._lock:
                waiters, self._flush_waiters = self._flush_waiters, []
                stopping = self._shutdown
            self._drain()
            for w in waiters:
                w.set()
            if stopping:
                return

    def _drain(self) -> None:
        """Export what is queued now (not what arrives meanwhile: that wakes the next round),
        so that a flush completes even while workflows keep producing spans."""
        queue = self._queue
        remaining = len(queue)
        while remaining > 0:
            n = min(remaining, self._batch)
            batch = [queue.popleft() for _ in range(n)]
            remaining -= n
            self._export(batch)

    def _export(self, batch: list[ReadableSpan]) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            result = self.exporter.export(batch)
        except Exception:
            log.exception(
                "lightspan tracing: exporter %s raised; %d span(s) lost",
                type(self.exporter).__name__,
                len(batch),
            )
            result = SpanExportResult.FAILURE
        finally:
            detach(token)
        self._batches += 1
        if result is SpanExportResult.SUCCESS:
            self._exported += len(batch)
        else:
            self._failed += len(batch)
            log.warning(
                "lightspan tracing: exporter %s failed a batch; %d span(s) lost (%d so far)",
                type(self.exporter).__name__,
                len(batch),
                self._failed,
            )

    # -- control --------------------------------------------------------------------------------

    def stats(self) -> ProcessorStats:
        return ProcessorStats(
            received=_value(self._received),
            queued=len(self._queue),
            exported=self._exported,
            dropped=_value(self._dropped),
            export_failed=self._failed,
            batches=self._batches,
        )

    @property
    def dropped(self) -> int:
        return _value(self._dropped)

    def force_flush(self, timeout_millis: float | None = None) -> bool:
        """Export every span queued before this call; False if that took longer than the timeout
        (default: the export timeout, ``OTEL_BSP_EXPORT_TIMEOUT``)."""
        if timeout_millis is None:
            timeout_millis = self._export_timeout_ms
        if self._shutdown or not self._thread.is_alive():
            return not self._queue
        done = threading.Event()
        with self._lock:
            self._flush_waiters.append(done)
        self._wake.set()
        return done.wait(timeout_millis / 1000.0)

    def shutdown(self, timeout_millis: float | None = None) -> None:
        """Export what is queued (within the timeout, default the export timeout), then shut the
        exporter down."""
        if self._shutdown:
            return
        if timeout_millis is None:
            timeout_millis = self._export_timeout_ms
        deadline = time.monotonic() + timeout_millis / 1000.0
        with self._lock:
            self._shutdown = True
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning(
                "lightspan tracing: exporter %s did not finish within %d ms at shutdown; "
                "%d span(s) still queued are lost",
                type(self.exporter).__name__,
                int(timeout_millis),
                len(self._queue),
            )
        stats = self.stats()
        if stats.dropped or stats.export_failed:
            log.warning(
                "lightspan tracing: processor shut down; %d span(s) dropped (queue full) and "
                "%d lost by the exporter out of %d",
                stats.dropped,
                stats.export_failed,
                stats.received,
            )
        self.exporter.shutdown()
