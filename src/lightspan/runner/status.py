"""The runner's final status updates, shared between attempts that finish together.

Why: over HTTP every request costs both processes CPU (client, server framework, validation),
and Agent Lightning's v0.3 API updates one attempt per request. Our store server has a batched
extension (``POST /v1/agl/attempts/update-many``); the runner sends the statuses that are due
while a request is in flight together in the next one, like :class:`~.spans.SpanSink` does for
spans. Each caller still gets its own attempt, or its own error, and is only called after its
spans were acknowledged (the runner's order is unchanged). Against a server without the
extension (``agl store``) the client falls back to per-attempt calls, and so does this sink.
"""

from __future__ import annotations

import asyncio

from lightspan.store.base import AttemptUpdate, LightningStore, StoreError
from lightspan.store.models import Attempt

__all__ = ["StatusSink"]


class StatusSink:
    """``update_attempt`` calls, coalesced into ``update_many_attempts`` for a store server."""

    def __init__(self, store: LightningStore, *, coalesce: bool = True, max_batch: int = 100):
        from lightspan.store.client import LightningStoreClient

        self.store = store
        self.max_batch = max_batch
        self._client = store if isinstance(store, LightningStoreClient) else None
        self.coalesce = coalesce and self._client is not None
        self._queue: list[tuple[AttemptUpdate, asyncio.Future[Attempt]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.requests = 0
        """Batched requests sent (for benchmarks and tests)."""

    async def send(self, update: AttemptUpdate) -> Attempt:
        """The updated attempt; raises the update's error (NotFound, invalid, unavailable)."""
        if not self.coalesce or (
            self._client is not None and self._client.update_many_supported is False
        ):
            return await self.store.update_attempt(
                update.rollout_id, update.attempt_id, **update.changes()
            )
        fut: asyncio.Future[Attempt] = asyncio.get_running_loop().create_future()
        self._queue.append((update, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="lightspan-status-sink")
        return await asyncio.shield(fut)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                self.requests += 1
                results = await self.store.update_many_attempts([u for u, _ in batch])
            except BaseException as e:
                error = e if isinstance(e, Exception) else RuntimeError(repr(e))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error)
                if not isinstance(e, Exception):
                    for _, fut in self._queue:
                        if not fut.done():
                            fut.set_exception(error)
                    self._queue.clear()
                    raise
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, StoreError):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
