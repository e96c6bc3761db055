"""``LoopThread``: an asyncio event loop running in a daemon thread, for blocking callers.

Why one helper: several places must run coroutines from code that is not on an event loop, or
must keep them off the caller's loop (the exporter's in-process store path runs in the span
processor's export thread and must never touch the workflow's loop; a blocking facade over an
async client). Each needs the same few careful lines: start the loop in its thread, submit with
``run_coroutine_threadsafe``, refuse a call from the loop's own thread (it would wait for itself
forever), stop and close once. It imports only the standard library, so every stage may use it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An event loop in a daemon thread; :meth:`call` runs a coroutine there and waits."""

    def __init__(self, name: str = "lightspan-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``fn()`` (a coroutine function) on the loop and wait for its result (or raise
        ``TimeoutError`` after ``timeout`` seconds; the coroutine goes on running)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.call from the loop's own thread would deadlock")
        if self.loop.is_closed():
            raise RuntimeError("LoopThread.call after close()")

        async def run() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and join its thread (idempotent)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
