"""``LightningStoreSpanExporter``: SDK spans to a LightningStore, in-process or over OTLP.

Why its own retry/spool logic instead of the SDK exporter's: a store or Collector outage must
cost the workflow nothing and lose nothing that fits on disk. The exporter is called from the
span processor's export thread (never the workflow's), and it bounds the time it holds that
thread:

* direct path: up to ``max_attempts`` attempts with exponential backoff, all within one
  per-batch deadline (the target's timeout);
* when they fail with a retryable error the target is marked *down*: the batch, already
  encoded as an OTLP ``ExportTraceServiceRequest``, goes to the on-disk :class:`Spool`
  (or, spool off, is dropped and counted), and later batches go straight to the spool without
  touching the network until the replay thread gets a batch through;
* the replay thread sends the oldest spooled batch with exponential backoff (probe), and once
  one succeeds the target is *up* again and the spool drains oldest first.

Delivery is at least once (a batch whose acknowledgement was lost is replayed); the store keys
spans by ``(rollout_id, attempt_id, span_id)`` and ignores duplicates, so the store ends up with
every span exactly once. Memory stays bounded: the exporter keeps no queue of its own (the
processor's queue is bounded) and the spool is bounded by ``max_bytes`` (oldest batches evicted,
counted as dropped).

Counters (:meth:`LightningStoreSpanExporter.stats`) are logged every ``log_interval_s`` when
they change and at shutdown, and exposed as OpenTelemetry observable counters
(``lightspan.exporter.spans{outcome=...}``) when a MeterProvider is configured.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from lightspan.exporter.encode import SpanEncoder
from lightspan.exporter.inprocess import InProcessSink
from lightspan.exporter.spool import Spool
from lightspan.exporter.stats import ExportStats, StatsCounter
from lightspan.exporter.transport import OtlpTarget, SendError, SendResult, make_sender
from lightspan.store.api.base import LightningStore

__all__ = ["LightningStoreSpanExporter"]

log = logging.getLogger("lightspan.exporter")


class LightningStoreSpanExporter(SpanExporter):
    """Exports SDK spans to a LightningStore; build it with :meth:`in_process` or :meth:`remote`
    (or :func:`lightspan.exporter.exporter_from_config`)."""

    def __init__(
        self,
        *,
        sink: InProcessSink | None = None,
        target: OtlpTarget | None = None,
        spool: Spool | None = None,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.1,
        replay_backoff_s: float = 0.5,
        replay_max_backoff_s: float = 10.0,
        in_process_timeout_s: float = 30.0,
        log_interval_s: float = 60.0,
        meter_provider: Any = None,
    ) -> None:
        if (sink is None) == (target is None):
            raise ValueError("LightningStoreSpanExporter needs exactly one of sink= or target=")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self._sink = sink
        self.target = target
        self._sender = make_sender(target) if target is not None else None
        self.spool = spool if target is not None else None
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.replay_backoff_s = replay_backoff_s
        self.replay_max_backoff_s = replay_max_backoff_s
        self.in_process_timeout_s = in_process_timeout_s
        self.log_interval_s = log_interval_s
        self._counts = StatsCounter()
        self._encoder = SpanEncoder()
        self._down = False
        self._probe_at = 0.0
        self._probe_backoff = replay_backoff_s
        self._shutdown = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._last_logged: ExportStats | None = None
        self._last_log_time = time.monotonic()
        self._thread: threading.Thread | None = None
        if self._sender is not None:
            self._thread = threading.Thread(
                target=self._background, name="lightspan-spool-replay", daemon=True
            )
            self._thread.start()
        _register_metrics(self, meter_provider)

    # ----------------------------------------------------------------- construction

    @classmethod
    def in_process(
        cls, store: LightningStore, *, owns_store: bool = False, **options: Any
    ) -> LightningStoreSpanExporter:
        """Spans into ``store`` in this process (``owns_store``: start it now, close it at
        shutdown)."""
        return cls(sink=InProcessSink(store, owns_store=owns_store), **options)

    @classmethod
    def remote(
        cls,
        target: OtlpTarget,
        *,
        spool_path: str | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        **options: Any,
    ) -> LightningStoreSpanExporter:
        """Spans over OTLP to ``target``; ``spool_path=None`` disables the spool."""
        spool = Spool(spool_path, spool_max_bytes) if spool_path and spool_max_bytes > 0 else None
        return cls(target=target, spool=spool, **options)

    # ----------------------------------------------------------------- accessors

    @property
    def store(self) -> LightningStore | None:
        """The in-process store (``None`` in remote mode)."""
        return self._sink.store if self._sink is not None else None

    def call_store(self, fn: Callable[[], Awaitable[Any]], timeout: float | None = 30.0) -> Any:
        """Run ``fn()`` (a coroutine function using :attr:`store`) on the store's own loop."""
        if self._sink is None:
            raise RuntimeError("call_store: this exporter sends to a remote target, not a store")
        return self._sink.call(fn, timeout)

    def describe(self) -> str:
        if self._sink is not None:
            return self._sink.describe()
        assert self.target is not None
        return self.target.describe()

    @property
    def is_down(self) -> bool:
        """True while the target is considered unreachable (batches go to the spool)."""
        return self._down

    def stats(self) -> ExportStats:
        """The counters now (spans, plus the spool's current size)."""
        if self.spool is not None:
            return self._counts.snapshot(
                spool_files=self.spool.files, spool_bytes=self.spool.size_bytes
            )
        return self._counts.snapshot()

    # ----------------------------------------------------------------- SpanExporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        if self._shutdown:
            self._counts.add(dropped=len(spans))
            return SpanExportResult.FAILURE
        if self._sink is not None:
            return self._export_in_process(spans)
        return self._export_remote(spans)

    def _export_in_process(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        assert self._sink is not None
        try:
            stored, duplicates, rejected, message = self._sink.send(
                spans, self.in_process_timeout_s
            )
        except Exception as e:
            self._counts.add(dropped=len(spans), failed_attempts=1)
            log.error(
                "lightspan exporter: the in-process store failed a batch of %d span(s): %s: %s",
                len(spans),
                type(e).__name__,
                e,
            )
            return SpanExportResult.FAILURE
        self._counts.add(sent=stored, duplicates=duplicates, rejected=rejected)
        if rejected:
            log.warning("lightspan exporter: the store rejected %d span(s): %s", rejected, message)
        self._maybe_log()  # in-process mode has no background thread to do it
        return SpanExportResult.SUCCESS

    def _export_remote(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        n = len(spans)
        payload = self._encoder.encode_request(spans)
        now = time.monotonic()
        if self._down:
            if self.spool is not None:
                return self._to_spool(payload, n)
            if now < self._probe_at:
                self._counts.add(dropped=n)
                return SpanExportResult.FAILURE
        ok, result, error = self._send_with_retries(payload, n)
        if ok:
            assert result is not None
            self._counts.add(sent=n - result.rejected)
            self._note_rejected(result)
            self._mark_up()
            return SpanExportResult.SUCCESS
        assert error is not None
        if not error.retryable:
            self._counts.add(dropped=n)
            log.error(
                "lightspan exporter: %d span(s) dropped, the target refused them: %s", n, error
            )
            return SpanExportResult.FAILURE
        self._mark_down(error)
        if self.spool is not None:
            return self._to_spool(payload, n)
        self._counts.add(dropped=n)
        return SpanExportResult.FAILURE

    def _send_with_retries(
        self, payload: bytes, n: int
    ) -> tuple[bool, SendResult | None, SendError | None]:
        assert self._sender is not None and self.target is not None
        deadline = time.monotonic() + self.target.timeout
        backoff = self.retry_backoff_s
        attempt = 0
        while True:
            remaining = max(0.05, deadline - time.monotonic())
            try:
                return True, self._sender.send(payload, remaining), None
            except SendError as e:
                self._counts.add(failed_attempts=1)
                attempt += 1
                pause = backoff * (0.5 + random.random() / 2)
                if (
                    not e.retryable
                    or attempt >= self.max_attempts
                    or time.monotonic() + pause >= deadline
                    or self._stop.is_set()
                ):
                    return False, None, e
                log.debug("lightspan exporter: attempt %d failed (%s); retrying", attempt, e)
                self._stop.wait(pause)
                backoff *= 2
                self._counts.add(retried=n)

    def _to_spool(self, payload: bytes, n: int) -> SpanExportResult:
        assert self.spool is not None
        stored, evicted = self.spool.add(payload, n)
        self._counts.add(dropped=evicted + (0 if stored else n), spooled=n if stored else 0)
        if stored:
            self._wake.set()
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def _note_rejected(self, result: SendResult) -> None:
        if result.rejected:
            self._counts.add(rejected=result.rejected)
            log.warning(
                "lightspan exporter: the target rejected %d span(s): %s",
                result.rejected,
                result.message,
            )

    def _mark_down(self, error: SendError) -> None:
        if not self._down:
            log.warning(
                "lightspan exporter: %s is unreachable (%s); %s",
                self.describe(),
                error,
                "spooling spans to " + str(self.spool.path)
                if self.spool is not None
                else "dropping spans until it is back (spool off)",
            )
            self._probe_backoff = self.replay_backoff_s
        else:
            self._probe_backoff = min(self._probe_backoff * 2, self.replay_max_backoff_s)
        self._down = True
        self._probe_at = time.monotonic() + self._probe_backoff

    def _mark_up(self) -> None:
        if self._down:
            log.warning("lightspan exporter: %s is reachable again", self.describe())
        self._down = False

    # ----------------------------------------------------------------- replay thread

    def _background(self) -> None:
        backoff = self.replay_backoff_s
        while not self._stop.is_set():
            self._maybe_log()
            if self.spool is None or self.spool.files == 0:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            outcome = self._replay_one()
            if outcome == "empty":
                self._wake.wait(1.0)
                self._wake.clear()
            elif outcome == "ok":
                backoff = self.replay_backoff_s
            else:
                self._stop.wait(backoff * (0.5 + random.random() / 2))
                backoff = min(backoff * 2, self.replay_max_backoff_s)

    def _replay_one(self) -> str:
        """Send the oldest spooled batch once: ``"ok"``, ``"failed"`` or ``"empty"``."""
        assert self.spool is not None and self._sender is not None and self.target is not None
        claimed = self.spool.claim_oldest()
        if claimed is None:
            return "empty"
        entry, records = claimed
        delivered = rejected = 0
        for n, payload in records:
            try:
                result = self._sender.send(payload, self.target.timeout)
            except SendError as e:
                self._counts.add(failed_attempts=1)
                if e.retryable:
                    self.spool.release(entry)
                    self._mark_down(e)
                    self._counts.add(replayed=delivered, rejected=rejected)
                    return "failed"
                log.error(
                    "lightspan exporter: spooled batch of %d span(s) refused, dropped: %s", n, e
                )
                self._counts.add(dropped=n)
                continue
            delivered += n - result.rejected
            rejected += result.rejected
            if result.rejected:
                log.warning(
                    "lightspan exporter: the target rejected %d replayed span(s): %s",
                    result.rejected,
                    result.message,
                )
        self.spool.done(entry)
        self._counts.add(replayed=delivered, rejected=rejected)
        self._mark_up()
        return "ok"

    def drain_spool(self, timeout_s: float = 30.0) -> bool:
        """Replay the spool now, in the calling thread, until it is empty (True) or a replay
        fails or ``timeout_s`` passes (False). No spool: True."""
        if self.spool is None:
            return True
        deadline = time.monotonic() + timeout_s
        while self.spool.files > 0:
            if time.monotonic() > deadline:
                return False
            outcome = self._replay_one()
            if outcome == "failed":
                return False
            if outcome == "empty":
                # Another thread holds the last batches; wait for it to finish them.
                time.sleep(0.05)
        return True

    def _maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_log_time < self.log_interval_s:
            return
        self._last_log_time = now
        stats = self.stats()
        if not force and stats == self._last_logged:
            return
        self._last_logged = stats
        level = logging.WARNING if stats.dropped else logging.INFO
        log.log(level, "lightspan exporter -> %s: %s", self.describe(), stats.log_line())

    # ----------------------------------------------------------------- lifecycle

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Try to empty the spool (the direct path keeps nothing queued)."""
        if self._down:
            return self.spool is None or self.spool.files == 0
        return self.drain_spool(timeout_millis / 1000.0)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the replay thread, make a last attempt to empty the spool (what is left stays on
        disk for the next process), log the counters, close connections."""
        if self._shutdown:
            return
        self._shutdown = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, (self.target.timeout if self.target else 0) + 1))
        if self.spool is not None and self.spool.files and not self._down:
            self.drain_spool(timeout_s)
        self._maybe_log(force=True)
        if self.spool is not None and self.spool.files:
            log.warning(
                "lightspan exporter: %d batch(es) (%d span(s)) left in the spool %s; the next "
                "process that uses it replays them",
                self.spool.files,
                self.spool.pending_spans(),
                self.spool.path,
            )
        if self._sender is not None:
            self._sender.close()
        if self._sink is not None:
            self._sink.close()


def _register_metrics(exporter: LightningStoreSpanExporter, meter_provider: Any = None) -> None:
    """Observable counters read from :meth:`stats` (free unless a MeterProvider collects);
    ``meter_provider=None`` means the global one."""
    try:
        from opentelemetry import metrics
        from opentelemetry.metrics import CallbackOptions, Observation
    except ImportError:  # pragma: no cover - the API is a base dependency
        return
    ref = weakref.ref(exporter)

    def observe(_: CallbackOptions) -> list[Observation]:
        exp = ref()
        if exp is None:
            return []
        stats = exp.stats().as_dict()
        target = exp.describe()
        return [
            Observation(stats[k], {"outcome": k, "target": target})
            for k in ("sent", "retried", "spooled", "replayed", "dropped", "rejected")
        ]

    meter = metrics.get_meter("lightspan.exporter", meter_provider=meter_provider)
    meter.create_observable_counter(
        "lightspan.exporter.spans",
        callbacks=[observe],
        unit="{span}",
        description="Spans handled by the LightningStore exporter, by outcome",
    )
