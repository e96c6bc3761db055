"""``LightningStoreClient``: the full interface over REST, retries, errors, sync facade, config."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from lightspan.config import LightspanConfig
from lightspan.store import (
    LLM,
    EnqueueRolloutRequest,
    NotFoundError,
    PromptTemplate,
    RolloutConfig,
    Span,
)
from lightspan.store.api.base import InvalidRequestError, LightningStore
from lightspan.store.api.client import (
    LightningStoreClient,
    StoreClientError,
    StoreUnavailableError,
    SyncLightningStoreClient,
    store_for_config,
)
from tests.fixtures.ports import free_port
from tests.store.servers import StoreProcess


@pytest.fixture(scope="module")
def server() -> Iterator[StoreProcess]:
    proc = StoreProcess("memory").start()
    yield proc
    proc.stop()


async def test_round_trip(server: StoreProcess) -> None:
    async with LightningStoreClient(server.address) as store:
        res = await store.add_resources(
            {
                "llm": LLM(endpoint="http://127.0.0.1:1/v1", model="m"),
                "prompt": PromptTemplate(template="Q: {q}", engine="f-string"),
            }
        )
        assert (await store.get_latest_resources()).resources_id == res.resources_id
        assert isinstance((await store.get_resources_by_id(res.resources_id)).resources["llm"], LLM)
        updated = await store.update_resources(res.resources_id, res.resources)
        assert updated.version == 2
        assert (await store.query_resources(resources_id=res.resources_id)).total == 1

        config = RolloutConfig(max_attempts=2, retry_condition=["failed"])
        [r1, r2] = await store.enqueue_many_rollouts(
            [EnqueueRolloutRequest(input={"q": 1}, config=config), EnqueueRolloutRequest(input=2)]
        )
        # Enqueued without resources: the latest ones are attached (as in Agent Lightning).
        assert r1.resources_id == res.resources_id and r2.resources_id == res.resources_id
        got = await store.dequeue_many_rollouts(limit=10, worker_id="w1")
        mine = {r.rollout_id: r for r in got}
        assert r1.rollout_id in mine and r2.rollout_id in mine
        attempted = mine[r1.rollout_id]
        aid = attempted.attempt.attempt_id

        seq = await store.get_next_span_sequence_id(r1.rollout_id, aid)
        span = Span.build(rollout_id=r1.rollout_id, attempt_id=aid, sequence_id=seq, name="llm")
        assert (await store.add_span(span)).span_id == span.span_id
        assert await store.add_span(span) is None  # duplicate
        more = [
            Span.build(rollout_id=r1.rollout_id, attempt_id=aid, sequence_id=seq + i, name=f"s{i}")
            for i in (1, 2)
        ]
        result = await store.add_many_spans([*more, span])
        assert [o.status for o in result.outcomes] == ["stored", "stored", "duplicate"]
        page = await store.query_spans(r1.rollout_id, "latest", name_contains="s")
        assert [s.name for s in page] == ["s1", "s2"]
        assert (await store.query_spans(r1.rollout_id)).total == 3

        # update with retry: failed -> requeuing (retry_condition), then succeed on attempt 2
        await store.update_attempt(r1.rollout_id, aid, status="failed")
        assert (await store.get_rollout_by_id(r1.rollout_id)).status == "requeuing"
        second = await store.start_attempt(r1.rollout_id, worker_id="w2")
        assert second.attempt.sequence_id == 2
        await store.update_attempt(r1.rollout_id, "latest", status="succeeded")
        done = await store.wait_for_rollouts(
            rollout_ids=[r1.rollout_id, r2.rollout_id], timeout=0.5
        )
        assert [r.rollout_id for r in done] == [r1.rollout_id]
        assert (await store.query_attempts(r1.rollout_id)).total == 2
        assert (await store.get_latest_attempt(r1.rollout_id)).sequence_id == 2

        updated_rollout = await store.update_rollout(r2.rollout_id, status="cancelled")
        assert updated_rollout.status == "cancelled"
        page = await store.query_rollouts(status_in=["succeeded", "cancelled"])
        assert {r1.rollout_id, r2.rollout_id} <= {r.rollout_id for r in page}

        worker = await store.update_worker("w1", heartbeat_stats={"gpu": 0})
        assert worker.heartbeat_stats == {"gpu": 0}
        assert (await store.get_worker_by_id("w1")).worker_id == "w1"
        assert (await store.query_workers(worker_id_contains="w")).total >= 2
        started = await store.start_rollout(input="direct", worker_id="w3")
        assert started.attempt.worker_id == "w3"
        assert (await store.statistics())["total_rollouts"] >= 3


async def test_errors_name_operation_and_address(server: StoreProcess) -> None:
    async with LightningStoreClient(server.address) as store:
        with pytest.raises(NotFoundError) as err:
            await store.update_rollout("ro-missing", status="failed")
        text = str(err.value)
        assert "update_rollout(ro-missing)" in text and server.address in text
        assert "ro-missing" in text and isinstance(err.value, StoreClientError)
        with pytest.raises(InvalidRequestError):
            await store.query_rollouts(sort_by="no_such_field")
        assert await store.get_rollout_by_id("ro-missing") is None


async def test_unreachable_server_is_retried_then_reported() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    store = LightningStoreClient(address, retries=2, backoff=0.01)
    with pytest.raises(StoreUnavailableError) as err:
        await store.statistics()
    assert "statistics" in str(err.value) and address in str(err.value)
    assert "after 3 attempts" in str(err.value)
    await store.close()


async def test_retries_only_transient_failures() -> None:
    calls: list[str] = []
    answers = {
        "/v1/agl/statistics": [503, 408, 200],
        "/v1/agl/rollouts/ro-x": [400],
        "/v1/agl/workers/w": [500, 500, 500, 500],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        status = answers[request.url.path].pop(0)
        if status == 200:
            return httpx.Response(200, json={"total_rollouts": 0})
        return httpx.Response(status, json={"detail": f"status {status}"})

    store = LightningStoreClient(
        "http://store.test", transport=httpx.MockTransport(handler), retries=3, backoff=0.001
    )
    assert (await store.statistics())["total_rollouts"] == 0
    assert calls.count("/v1/agl/statistics") == 3
    with pytest.raises(InvalidRequestError):
        await store.update_rollout("ro-x", status="failed")
    assert calls.count("/v1/agl/rollouts/ro-x") == 1  # 4xx is final
    with pytest.raises(StoreUnavailableError) as err:
        await store.update_worker("w", heartbeat_stats={})
    assert "HTTP 500" in str(err.value) and calls.count("/v1/agl/workers/w") == 4
    await store.close()


def test_sync_facade(server: StoreProcess) -> None:
    with SyncLightningStoreClient(server.address) as store:
        rollout = store.enqueue_rollout(input={"sync": True})
        assert store.get_rollout_by_id(rollout.rollout_id).status == "queuing"
        assert store.otlp_traces_endpoint() == server.address + "/v1/traces"


def test_store_for_config_switches_by_configuration(server: StoreProcess) -> None:
    config = LightspanConfig()
    config.agentLightning.store.address = server.address
    external = store_for_config(config)
    assert isinstance(external, LightningStoreClient) and external.address == server.address
    config.agentLightning.store.type = "in_memory"
    local = store_for_config(config)
    assert isinstance(local, LightningStore) and not isinstance(local, LightningStoreClient)
