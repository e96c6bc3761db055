"""Delivery into a LightningStore object in this process (``store.type: in_memory``).

Why a private event loop in its own thread: the store is asyncio code, and the spans are handed
over in the span processor's export thread, not in the workflow's loop. Running the store's
coroutines on a loop that the exporter owns keeps them off the workflow's loop (which must never
wait for the store) and gives every call to the store one home, so its asyncio locks never see
two loops (the loop is a :class:`lightspan.loop_thread.LoopThread`). Code that wants to read
the store (the demo's report, tests) goes through :meth:`InProcessSink.call` too.

The spans reach the store as they would over OTLP: encoded to OTLP/protobuf bytes (the
exporter's :class:`~lightspan.exporter.encode.SpanEncoder`, byte for byte the SDK's encoding) and
converted by the store's one conversion (:func:`lightspan.store.intake.convert.convert`, in this
export thread), so a span is stored the same whichever way it travelled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from lightspan.exporter.encode import SpanEncoder
from lightspan.loop_thread import LoopThread
from lightspan.store.api.base import LightningStore
from lightspan.store.intake.convert import convert
from lightspan.store.intake.ingest import ingest

__all__ = ["InProcessSink"]


class InProcessSink:
    """Encodes and converts SDK spans and adds them to ``store`` on a :class:`LoopThread` of its
    own.

    ``owns_store``: start the store on the loop now and close it at :meth:`close` (the exporter
    created it); otherwise the caller manages the store's lifecycle (it must not be bound to
    another running loop's background tasks that use the same locks).
    """

    def __init__(
        self, store: LightningStore, *, loop: LoopThread | None = None, owns_store: bool = False
    ) -> None:
        self.store = store
        self.loop = loop or LoopThread("lightspan-store-loop")
        self._owns_loop = loop is None
        self._owns_store = owns_store
        self._encoder = SpanEncoder()
        if owns_store:
            self.loop.call(store.start, timeout=30)

    def describe(self) -> str:
        return f"in-process {type(self.store).__name__}"

    def send(self, spans: Sequence[ReadableSpan], timeout: float) -> tuple[int, int, int, str]:
        """Store the batch; ``(stored, duplicates, rejected, message)``."""
        converted = convert(self._encoder.encode_request(spans))
        result = self.loop.call(lambda: ingest(self.store, converted), timeout)
        return result.stored, result.duplicates, result.rejected, result.message

    def call(self, fn: Callable[[], Awaitable[Any]], timeout: float | None = None) -> Any:
        """Run a coroutine against the store on its loop (for readers of the store)."""
        return self.loop.call(fn, timeout)

    def close(self) -> None:
        if self._owns_store:
            try:
                self.loop.call(self.store.close, timeout=10)
            except Exception:  # closing is best effort at shutdown
                pass
        if self._owns_loop:
            self.loop.close()
