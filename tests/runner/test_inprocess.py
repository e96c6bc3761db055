"""The runner in-process, as the trainer uses it: in the store's loop, and from a thread."""

from __future__ import annotations

import asyncio
import threading
import time

from lightspan.runner import RunnerStats, WorkflowRunner
from lightspan.store.client import LightningStoreClient
from lightspan.store.factory import open_store
from tests.runner.workflows import wide_workflow
from tests.store.servers import StoreProcess


async def test_running_in_the_loop_of_an_in_process_store() -> None:
    store = await open_store("memory")
    try:
        runner = WorkflowRunner(wide_workflow(width=5), store, workers=3, poll_interval=0.02)
        async with runner.running():
            ids = [(await store.enqueue_rollout({"input": {"i": i}})).rollout_id for i in range(9)]
            done = await store.wait_for_rollouts(rollout_ids=ids, timeout=10)
            assert sorted(r.status for r in done) == ["succeeded"] * 9
            # read at once, right after the wait: complete sets (5 branches + 5 others)
            totals = {(await store.query_spans(rid)).total for rid in ids}
            assert totals == {10}
        assert runner.stats.succeeded == 9
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
