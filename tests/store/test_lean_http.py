"""The store client's lean HTTP path (``lean_http``) for a runner's exchange requests."""

from __future__ import annotations

import pytest

from lightspan.store.api.base import AttemptUpdate
from lightspan.store.api.client import LightningStoreClient, StoreClientError, StoreUnavailableError
from lightspan.store.api.lean_http import usable
from tests.store.servers import StoreProcess


def test_used_only_for_plain_http_without_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert usable("http://127.0.0.1:4747")
    assert not usable("https://store.example:4747")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert not usable("http://store.example:4747")
    assert not LightningStoreClient("http://store.example:4747")._lean
    monkeypatch.setenv("NO_PROXY", "store.example")
    assert usable("http://store.example:4747")


async def test_exchanges_go_through_one_kept_alive_connection_with_the_token() -> None:
    proc = StoreProcess("memory", token="s3cret").start()
    try:
        async with LightningStoreClient(proc.address, token="s3cret") as client:
            await client.enqueue_rollout({"input": 1})
            got = await client.runner_exchange(dequeue=5, worker_id="w-lean")
            assert got is not None and len(got.rollouts) == 1
            rollout = got.rollouts[0]
            done = await client.runner_exchange(
                updates=[AttemptUpdate(rollout.rollout_id, "latest", status="succeeded")]
            )
            assert done is not None and done.results[0].status == "succeeded"  # type: ignore[union-attr]
            assert client.lean_requests == 2
            pool = client._lean_pool()
            assert pool is not None and len(pool._idle) == 1  # reused, kept for the next one
        async with LightningStoreClient(proc.address, token="wrong", retries=0) as bad:
            with pytest.raises(StoreClientError) as err:
                await bad.runner_exchange(dequeue=1)
            assert err.value.status == 401
    finally:
        assert proc.stop() == 0


async def test_a_store_that_went_away_is_reported_like_through_httpx() -> None:
    proc = StoreProcess("memory").start()
    client = LightningStoreClient(proc.address, retries=1, backoff=0.01)
    try:
        assert await client.runner_exchange(dequeue=1) is not None
        assert proc.stop() == 0
        with pytest.raises(StoreUnavailableError) as err:
            await client.runner_exchange(dequeue=1)
        assert "runner_exchange" in str(err.value) and proc.address in str(err.value)
    finally:
        await client.close()
