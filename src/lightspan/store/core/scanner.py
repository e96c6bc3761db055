"""The background health scanner: marks timed-out and unresponsive attempts on a schedule.

Why a task and not a lazy check before each call (as the reference store does): an idle store
must still notice a dead runner, so that its rollout is retried or failed and
``wait_for_rollouts`` returns; and a call should not pay for a scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)


class HealthScanner:
    """Runs ``scan`` every ``interval`` seconds between :meth:`start` and :meth:`stop`.

    ``interval <= 0`` disables it (tests then call the store's ``scan_health`` directly).
    A failing scan is logged and retried at the next tick; it never stops the scanner.
    """

    def __init__(self, scan: Callable[[], Awaitable[Any]], *, interval: float) -> None:
        self._scan = scan
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.interval > 0 and not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="lightspan-store-health-scanner"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("store health scan failed; retrying in %.1f s", self.interval)
