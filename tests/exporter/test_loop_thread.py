"""LoopThread: the one event-loop-in-a-thread helper (the in-process store path uses it)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lightspan.loop_thread import LoopThread


def test_call_runs_the_coroutine_on_the_loop_thread_and_returns_or_raises():
    lt = LoopThread("test-loop")
    try:

        async def where():
            await asyncio.sleep(0)
            return threading.current_thread().name, asyncio.get_running_loop()

        name, loop = lt.call(where, timeout=5)
        assert name == "test-loop" and loop is lt.loop

        async def fails():
            raise KeyError("nope")

        with pytest.raises(KeyError, match="nope"):
            lt.call(fails, timeout=5)

        async def slow():
            await asyncio.sleep(10)

        with pytest.raises(TimeoutError):
            lt.call(slow, timeout=0.05)
    finally:
        lt.close()


def test_a_call_from_the_loop_itself_is_refused_instead_of_deadlocking():
    lt = LoopThread()
    try:

        async def nested():
            lt.call(asyncio.sleep, timeout=1)

        with pytest.raises(RuntimeError, match="would deadlock"):
            lt.call(nested, timeout=5)
    finally:
        lt.close()


def test_close_is_idempotent_and_later_calls_say_so():
    lt = LoopThread()
    lt.close()
    lt.close()
    assert lt.loop.is_closed()

    async def anything():
        return 1

    with pytest.raises(RuntimeError, match="after close"):
        lt.call(anything)
