"""The runner in-process, as the trainer uses it: in the store's loop, and from a thread."""

from __future__ import annotations

import asyncio
import threading
import time

from lightspan.runner import RunnerStats, WorkflowRunner
from lightspan.store.api.client import LightningStoreClient
from lightspan.store.backends.factory import open_store
from tests.runner.workflows import wide_workflow
from tests.store.servers import StoreProcess


async def test_running_in_the_loop_of_an_in_process_store() -> None:
    store = await open_store("memory")
    try:
        results: dict[str, tuple[str, float | None]] = {}
        runner = WorkflowRunner(
            wide_workflow(width=5),
            store,
            workers=3,
            poll_interval=0.02,
            on_result=lambda ro, status, res: results.__setitem__(
                ro.rollout_id, (status, res.reward if res else None)
            ),
        )
        async with runner.running():
            ids = [(await store.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(9)]
            done = await store.wait_for_rollouts(rollout_ids=ids, timeout=10)
            assert sorted(r.status for r in done) == ["succeeded"] * 9
            # read at once, right after the wait: complete sets (5 branches + 5 others)
            totals = {(await store.query_spans(rid)).total for rid in ids}
            assert totals == {10}
        assert runner.stats.succeeded == 9
        assert results == {rid: ("succeeded", 1.0) for rid in ids}
        workers = (await store.query_workers()).items
        assert {w.worker_id for w in workers} == set(runner.worker_ids)
    finally:
        await store.close()


def test_serving_from_a_thread_and_stopping_it_from_another(store_server: StoreProcess) -> None:
    client = LightningStoreClient(store_server.address)
    runner = WorkflowRunner(wide_workflow(width=2), client, workers=2, poll_interval=0.02)
    result: list[RunnerStats] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(runner.serve())))
    thread.start()

    async def produce() -> list[str]:
        async with LightningStoreClient(store_server.address) as producer:
            ids = [
                (await producer.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(4)
            ]
            done = await producer.wait_for_rollouts(rollout_ids=ids, timeout=10)
            return [r.status for r in done]

    assert asyncio.run(produce()) == ["succeeded"] * 4
    t0 = time.monotonic()
    runner.request_stop()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - t0 < 5
    assert result[0].succeeded == 4
    asyncio.run(client.close())


async def test_content_capture_can_be_switched_off(fake_llm) -> None:  # type: ignore[no-untyped-def]
    from tests.runner.workflows import qa_workflow

    store = await open_store("memory")
    try:
        for capture in (True, False):
            wf = qa_workflow(fake_llm.base_url)
            r = await store.enqueue_rollout({"input": {"q": "c"}})
            runner = WorkflowRunner(wf, store, capture_content=capture)
            await runner.serve(max_rollouts=1)
            await wf.aclose()
            (llm,) = (await store.query_spans(r.rollout_id, name="openai.chat.completion")).items
            assert ("gen_ai.prompt.0.content" in llm.attributes) is capture
            assert ("gen_ai.completion.0.content" in llm.attributes) is capture
            assert llm.attributes["gen_ai.usage.output_tokens"] > 0
    finally:
        await store.close()


async def test_an_idle_runner_polls_once_per_interval_not_once_per_worker() -> None:
    from lightspan.store.backends.memory import InMemoryLightningStore

    class Counting(InMemoryLightningStore):
        dequeues = 0

        async def dequeue_rollout(self, worker_id=None):  # type: ignore[no-untyped-def]
            Counting.dequeues += 1
            return await super().dequeue_rollout(worker_id)

    store = Counting()
    await store.start()
    try:
        runner = WorkflowRunner(wide_workflow(width=1), store, workers=8, poll_interval=0.1)
        async with runner.running():
            await asyncio.sleep(1.0)
            idle = Counting.dequeues
            # work still starts at once on every worker once it arrives
            ids = [
                (await store.enqueue_rollout({"input": {"sleep": 0.3}})).rollout_id
                for _ in range(8)
            ]
            t0 = time.monotonic()
            done = await store.wait_for_rollouts(rollout_ids=ids, timeout=5)
            assert len(done) == 8 and time.monotonic() - t0 < 1.5  # in parallel, not 8 x 0.3 s
        assert idle <= 8 + 12  # ~10 polls in 1 s at 0.1 s (8 workers would make ~80)
    finally:
        await store.close()


async def test_a_large_attempt_is_delivered_in_bounded_requests(store_server: StoreProcess) -> None:
    async with LightningStoreClient(store_server.address) as client:
        runner = WorkflowRunner(wide_workflow(width=40), client)
        runner._sink.max_batch = 7  # 45 spans -> 7 requests, in order
        r = await client.enqueue_rollout({"input": {}})
        stats = await runner.serve(max_rollouts=1)
        assert stats.succeeded == 1 and stats.spans == 45
        spans = (await client.query_spans(r.rollout_id)).items
        assert len(spans) == 45 and spans[-1].name == "invoke_workflow wide"
        assert [s.sequence_id for s in spans] == sorted(s.sequence_id for s in spans)
