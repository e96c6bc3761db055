"""The runner against a real store server (``lightspan store serve``) and the fake LLM."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from lightspan.runner import InputMapping, WorkflowRunner
from lightspan.store import UNSET, EnqueueRolloutRequest, RolloutConfig
from lightspan.store import PromptTemplate as StorePrompt
from lightspan.store.api.client import LightningStoreClient
from tests.fixtures.fake_llm import FakeLLM
from tests.runner.workflows import qa_workflow, wide_workflow
from tests.store.servers import StoreProcess


def _reward(spans: list[Any]) -> float | None:
    """Agent Lightning's find_final_reward: the last reward annotation in sequence order."""
    value = None
    for s in spans:
        if "agentlightning.reward.0.value" in s.attributes:
            value = s.attributes["agentlightning.reward.0.value"]
    return value


async def _spans(client: LightningStoreClient, rollout_id: str) -> list[Any]:
    return list((await client.query_spans(rollout_id)).items)


async def test_llm_rollouts_report_spans_reward_status_and_workers(
    client: LightningStoreClient, fake_llm: FakeLLM
) -> None:
    wf = qa_workflow(fake_llm.base_url)
    rows = [{"input": {"q": f"w{i}"}, "expected": f"Q: w{i}"} for i in range(3)]
    rows.append({"q": "flat", "expected": "wrong"})  # flat form, reward 0
    ids = [(await client.enqueue_rollout(r, mode="train")).rollout_id for r in rows]
    runner = WorkflowRunner(wf, client, workers=2, worker_id_prefix="t-runner")
    stats = await runner.serve(idle_exit=0.5)
    await wf.aclose()
    assert (stats.rollouts, stats.succeeded, stats.failed) == (4, 4, 0)
    for i, rid in enumerate(ids):
        rollout = await client.get_rollout_by_id(rid)
        assert rollout is not None and rollout.status == "succeeded"
        assert (await client.query_attempts(rid)).total == 1
        spans = await _spans(client, rid)
        llm = [s for s in spans if s.name == "openai.chat.completion"]
        assert len(llm) == 1
        a = llm[0].attributes
        q = f"w{i}" if i < 3 else "flat"
        assert a["gen_ai.prompt.0.role"] == "user" and a["gen_ai.prompt.0.content"] == f"Q: {q}"
        assert a["gen_ai.completion.0.content"] == f"echo: Q: {q}"
        assert a["lightspan.step.name"] == "answer"
        assert a["lightspan.resources_id"] == "qa-own"
        assert a["lightspan.llm.resource"] == "default"
        assert a["agentlightning.attempt_id"] == rollout.attempt.attempt_id
        assert _reward(spans) == (1.0 if i < 3 else 0.0)
        assert {s.attempt_id for s in spans} == {rollout.attempt.attempt_id}
    workers = {w.worker_id: w for w in (await client.query_workers()).items}
    assert set(workers) == {"t-runner-0", "t-runner-1"}
    assert all(
        w.heartbeat_stats and w.heartbeat_stats["workflow"] == "qa" for w in workers.values()
    )


class _OrderRecordingClient(LightningStoreClient):
    """Records when each attempt's spans were delivered and when its status was sent."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.events: list[tuple[str, str]] = []

    async def export_otlp(self, body: bytes) -> tuple[int, str]:
        result = await super().export_otlp(body)
        self._record_spans(body)
        return result

    def _record_spans(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    for kv in sp.attributes:
                        if kv.key == "agentlightning.attempt_id":
                            self.events.append(("spans", kv.value.string_value))

    async def update_attempt(self, rollout_id: str, attempt_id: str, **kw: Any) -> Any:
        if "status" in kw:
            self.events.append(("status", attempt_id))
        return await super().update_attempt(rollout_id, attempt_id, **kw)

    async def runner_exchange(self, **kw: Any) -> Any:
        # our server's extension: the request's spans, then its statuses, count as sent when
        # the request is (the server stores the spans before it applies any status)
        if kw.get("otlp"):
            self._record_spans(kw["otlp"])
        for u in kw.get("updates", ()):
            if u.status is not UNSET:
                self.events.append(("status", u.attempt_id))
        return await super().runner_exchange(**kw)


async def test_spans_are_stored_before_the_status_says_finished(
    store_server: StoreProcess, client: LightningStoreClient
) -> None:
    """An optimizer polling wait_for_rollouts and reading spans at once sees complete sets."""
    recording = _OrderRecordingClient(store_server.address)
    wf = wide_workflow(width=12)
    n = 24
    ids = [(await client.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(n)]
    seen: dict[str, int] = {}

    async def optimizer() -> None:
        pending = list(ids)
        while pending:
            done = await client.wait_for_rollouts(rollout_ids=pending, timeout=0)
            for r in done:
                seen[r.rollout_id] = (await client.query_spans(r.rollout_id)).total
                pending.remove(r.rollout_id)
            await asyncio.sleep(0.005)

    runner = WorkflowRunner(wf, recording, workers=4)
    watcher = asyncio.create_task(optimizer())
    stats = await runner.serve(max_rollouts=n)
    await asyncio.wait_for(watcher, 10)
    await recording.close()
    assert stats.succeeded == n
    final = {rid: (await client.query_spans(rid)).total for rid in ids}
    # 12 branch tasks + check + fan + root sequence + invoke_workflow + reward = 17
    assert set(final.values()) == {17}
    assert seen == final
    # and, per attempt, no status was sent before its spans
    first_status: dict[str, int] = {}
    last_spans: dict[str, int] = {}
    for i, (kind, attempt) in enumerate(recording.events):
        if kind == "status":
            first_status.setdefault(attempt, i)
        else:
            last_spans[attempt] = i
    assert len(first_status) == n
    assert all(last_spans[a] < first_status[a] for a in first_status)
    assert recording.exchange_supported is True  # spans and statuses took the shared path


async def test_bad_rollouts_fail_with_their_error_and_the_runner_keeps_serving(
    client: LightningStoreClient, fake_llm: FakeLLM
) -> None:
    wf = qa_workflow(fake_llm.base_url)
    cases = [
        ({"input": {"q": "ok1"}, "expected": "Q: ok1"}, None, None),
        ({"input": {"x": 1}}, None, "prompt template needs variable 'q'"),
        ({"input": {"q": "r"}}, "nope", "unknown resources_id 'nope'"),
        ({"question": "no q key"}, None, "lacks required key(s) ['q']"),
        ({"input": {"q": "ok2"}, "expected": "Q: ok2"}, None, None),
    ]
    ids = []
    for row, res_id, _ in cases:
        ids.append((await client.enqueue_rollout(row, resources_id=res_id)).rollout_id)
    # rows of the flat form must carry "q"; the wrapped ones are checked by the template
    mapping = InputMapping(required_keys=())

    def strict(value: Any) -> tuple[Any, Any]:
        inp, expected = mapping(value)
        if "question" in inp:
            return InputMapping(required_keys=("q",))(value)
        return inp, expected

    runner = WorkflowRunner(wf, client, workers=1, input_mapping=strict)
    stats = await runner.serve(idle_exit=0.5)
    await wf.aclose()
    assert (stats.succeeded, stats.failed, stats.rollouts) == (2, 3, 5)
    for rid, (_, _, error) in zip(ids, cases, strict=True):
        rollout = await client.get_rollout_by_id(rid)
        assert rollout is not None
        assert (await client.query_attempts(rid)).total == 1
        if error is None:
            assert rollout.status == "succeeded"
        else:
            assert rollout.status == "failed"
            assert error in rollout.attempt.metadata["error"], rollout.attempt.metadata


async def test_timeouts_and_retries_follow_the_rollout_config(
    client: LightningStoreClient,
) -> None:
    wf = wide_workflow(width=2)
    slow = await client.enqueue_rollout(
        {"input": {"sleep": 5}},
        config=RolloutConfig(timeout_seconds=0.5, max_attempts=2, retry_condition=["timeout"]),
    )
    boom = await client.enqueue_rollout(
        {"input": {"boom": 7}},
        config=RolloutConfig(max_attempts=3, retry_condition=["failed"]),
    )
    t0 = time.monotonic()
    runner = WorkflowRunner(wf, client, workers=2, poll_interval=0.05)
    stats = await runner.serve(idle_exit=1.0)
    assert time.monotonic() - t0 < 5  # the slow one was cut at 0.5 s, twice
    assert stats.timeout == 2 and stats.failed == 3
    r = await client.get_rollout_by_id(slow.rollout_id)
    attempts = (await client.query_attempts(slow.rollout_id)).items
    assert r is not None and r.status == "failed"
    assert [a.status for a in attempts] == ["timeout", "timeout"]
    assert "timed out after 0.5s" in attempts[-1].metadata["error"]
    r = await client.get_rollout_by_id(boom.rollout_id)
    attempts = (await client.query_attempts(boom.rollout_id)).items
    assert r is not None and r.status == "failed"
    assert [a.status for a in attempts] == ["failed"] * 3
    assert attempts[0].metadata["error"] == "RuntimeError: boom on 7"
    # the failing run's spans are there too, with the exception recorded
    spans = (await client.query_spans(boom.rollout_id, attempts[0].attempt_id)).items
    assert any(s.status.status_code == "ERROR" for s in spans)


async def test_resources_published_while_serving_are_adopted(
    client: LightningStoreClient, fake_llm: FakeLLM
) -> None:
    wf = qa_workflow(fake_llm.base_url)
    runner = WorkflowRunner(wf, client, workers=1, poll_interval=0.05, resources_ttl=0.3)

    async def one(resources_id: str | None = None) -> str:
        r = await client.enqueue_rollout({"input": {"q": "x"}}, resources_id=resources_id)
        done = await client.wait_for_rollouts(rollout_ids=[r.rollout_id], timeout=10)
        assert done and done[0].status == "succeeded"
        return fake_llm.requests[-1]["messages"][-1]["content"]

    async with runner.running():
        assert await one() == "Q: x"  # the workflow's own set
        await client.update_resources(
            "qa:v1", {"ask": StorePrompt(template="V1 {q}", engine="f-string")}
        )
        await asyncio.sleep(0.4)
        assert await one() == "V1 x"
        await client.update_resources(
            "qa:v2", {"ask": StorePrompt(template="V2 {q}", engine="f-string")}
        )
        await asyncio.sleep(0.4)
        assert await one() == "V2 x"
        # another workflow's newer set is never taken (the store stamps it on rollouts
        # enqueued without an id: it is ignored); an explicit un-namespaced id is used
        await client.update_resources(
            "other:v3", {"ask": StorePrompt(template="OTHER {q}", engine="f-string")}
        )
        await asyncio.sleep(0.4)
        assert await one() == "V2 x"
        assert await one("other:v3") == "V2 x"
        await client.update_resources(
            "v7", {"prompt": StorePrompt(template="APO {q}", engine="f-string")}
        )
        assert await one("v7") == "APO x"  # single-prompt rule: replaces "ask"
        # the store stamps its latest id (v7, not namespaced) on a rollout enqueued without
        # one: un-namespaced ids are used as given (documented in docs/runner.md)
        assert await one() == "APO x"
    await wf.aclose()


async def test_a_store_outage_mid_run_loses_nothing_and_runs_nothing_twice(
    tmp_path: Any,
) -> None:
    server = StoreProcess("sqlite", db=str(tmp_path / "store.db")).start()
    client = LightningStoreClient(server.address, retries=1, connect_timeout=0.5)
    try:
        wf = wide_workflow(width=3)
        ids = [
            (await client.enqueue_rollout({"input": {"sleep": 0.5}})).rollout_id for _ in range(2)
        ]
        later = (await client.enqueue_rollout({"input": {"sleep": 0}})).rollout_id
        runner = WorkflowRunner(wf, client, workers=2, poll_interval=0.05, store_retry_interval=0.2)
        task = asyncio.create_task(runner.serve(max_rollouts=3))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            page = await client.query_rollouts(status_in=["preparing", "running"])
            if page.total == 2:
                break
            await asyncio.sleep(0.05)
        server.kill()  # SIGKILL while both rollouts run
        await asyncio.sleep(1.5)  # they finish meanwhile: delivery and status must wait
        await asyncio.to_thread(server.start)  # same port, same database
        stats = await asyncio.wait_for(task, 30)
        assert stats.store_errors > 0
        assert stats.succeeded == 3 and stats.status_lost == 0
        for rid in [*ids, later]:
            rollout = await client.get_rollout_by_id(rid)
            assert rollout is not None and rollout.status == "succeeded", rollout
            assert (await client.query_attempts(rid)).total == 1
            spans = (await client.query_spans(rid)).items
            assert len(spans) == 8  # 3 branches + check + fan + root + invoke + reward
            assert _reward(spans) == 1.0
    finally:
        await client.close()
        server.stop()


async def test_a_production_process_adopts_published_resources_without_restart(
    client: LightningStoreClient, fake_llm: FakeLLM
) -> None:
    from lightspan.runner import ResourcesProvider

    wf = qa_workflow(fake_llm.base_url)
    provider = ResourcesProvider.attach(wf, client, ttl=0.3)
    assert (await wf.run({"q": "p"})).resources_id == "qa-own"
    await client.update_resources(
        "qa:v5", {"ask": StorePrompt(template="P5 {q}", engine="f-string")}
    )
    await asyncio.sleep(0.4)
    result = await wf.run({"q": "p"})
    assert result.resources_id == "qa:v5" and result.output == "P5 p"
    assert fake_llm.requests[-1]["messages"][-1]["content"] == "P5 p"
    provider.ttl = 60.0  # (0.3 s may pass during five runs on a loaded machine)
    await wf.run({"q": "p"})
    fetches = provider.fetches
    for _ in range(5):
        await wf.run({"q": "p"})
    assert provider.fetches == fetches  # within the TTL: no store round trip per run
    await wf.aclose()


async def test_a_hard_stop_reports_in_flight_attempts_failed_for_the_store_to_retry(
    client: LightningStoreClient,
) -> None:
    wf = wide_workflow(width=2)
    r = await client.enqueue_rollout(
        {"input": {"sleep": 30}}, config=RolloutConfig(max_attempts=2, retry_condition=["failed"])
    )
    runner = WorkflowRunner(wf, client, workers=1, poll_interval=0.05)
    task = asyncio.create_task(runner.serve())
    for _ in range(200):
        current = await client.get_rollout_by_id(r.rollout_id)
        if current is not None and current.status != "queuing":
            break
        await asyncio.sleep(0.05)
    runner.request_stop()  # drain: the 30 s rollout would keep it busy...
    await asyncio.sleep(0.3)
    assert not task.done()
    t0 = time.monotonic()
    runner.request_stop(hard=True)  # ...the second stop cancels it
    stats = await asyncio.wait_for(task, 10)
    assert time.monotonic() - t0 < 5
    assert stats.failed == 1 and stats.status_lost == 0
    (attempt,) = (await client.query_attempts(r.rollout_id)).items
    assert attempt.status == "failed"
    assert "runner stopped before the rollout finished" in attempt.metadata["error"]
    rollout = await client.get_rollout_by_id(r.rollout_id)
    assert rollout is not None and rollout.status == "requeuing"  # the store's retry policy
    # the cancelled run's spans were delivered first (cancelled steps marked as such)
    spans = (await client.query_spans(r.rollout_id)).items
    assert spans and any(s.attributes.get("lightspan.cancelled") for s in spans)


class _CountingWorkerCalls(LightningStoreClient):
    """Counts ``update_worker`` calls (one request each)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.update_worker_calls = 0

    async def update_worker(self, *a: Any, **kw: Any) -> Any:
        self.update_worker_calls += 1
        return await super().update_worker(*a, **kw)


async def test_workers_are_registered_in_one_exchange_request_and_one_by_one_without_it(
    store_server: StoreProcess,
) -> None:
    """With our server's exchange, 8 workers are registered (heartbeat stats and all) without a
    single ``update_worker`` request; without the extension (as against agl store), one each."""
    for extension in (True, False):
        client = _CountingWorkerCalls(store_server.address)
        if not extension:
            client.exchange_supported = False
        prefix = f"reg-{extension}"
        wf = wide_workflow()
        await client.enqueue_many_rollouts(
            [EnqueueRolloutRequest(input={"input": i}, mode="train") for i in range(3)]
        )
        runner = WorkflowRunner(wf, client, workers=8, worker_id_prefix=prefix)
        stats = await runner.serve(max_rollouts=3)
        await wf.aclose()
        assert stats.rollouts == 3
        workers = (await client.query_workers(worker_id_contains=prefix)).items
        assert {w.worker_id for w in workers} == {f"{prefix}-{i}" for i in range(8)}
        assert all(
            w.heartbeat_stats
            and w.heartbeat_stats["runner"] == "lightspan"
            and w.last_heartbeat_time
            for w in workers
        )
        assert client.update_worker_calls == (0 if extension else 8)
        await client.close()
