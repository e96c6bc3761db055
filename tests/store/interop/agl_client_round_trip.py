"""Run in the Agent Lightning 0.3 venv: drive a LightningStore server with Agent Lightning's own
``LightningStoreClient`` and tracer, as a runner and an algorithm would. Usage:
``python agl_client_round_trip.py http://127.0.0.1:PORT``. Prints a JSON report on stdout;
any failed expectation raises (non-zero exit with a traceback on stderr).

The report's ``conversion`` entry is what Agent Lightning stores for the sample spans of
``sample_spans.py`` (done here too because importing agentlightning takes many seconds).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import agentlightning as agl
import aiohttp
from agentlightning.emitter.reward import emit_reward, find_final_reward
from agentlightning.store.client_server import LightningStoreClient
from agentlightning.tracer.otel import OtelTracer
from agl_convert import convert


async def main(address: str) -> dict:
    client = LightningStoreClient(address, retry_delays=(0.2, 0.5), health_retry_delays=(0.1,))
    out: dict = {}

    # resources
    res = await client.add_resources(
        {
            "main_llm": agl.LLM(
                endpoint="http://127.0.0.1:9/v1", model="m", sampling_parameters={"t": 0.1}
            ),
            "prompt": agl.PromptTemplate(template="Q: {q}", engine="f-string"),
        }
    )
    latest = await client.get_latest_resources()
    assert latest is not None and latest.resources_id == res.resources_id, latest
    assert isinstance(latest.resources["main_llm"], agl.LLM)
    upd = await client.update_resources(res.resources_id, latest.resources)
    assert upd.version == 2, upd
    by_id = await client.get_resources_by_id(res.resources_id)
    assert by_id is not None and by_id.version == 2
    out["resources_id"] = res.resources_id

    # enqueue / dequeue
    config = agl.RolloutConfig(max_attempts=2, retry_condition=["failed"])
    rollout = await client.enqueue_rollout(input={"q": "2+2"}, mode="train", config=config)
    many = await client.enqueue_many_rollouts(
        [agl.EnqueueRolloutRequest(input={"q": i}) for i in range(3)]
    )
    assert len(many) == 3
    attempted = await client.dequeue_rollout(worker_id="agl-worker-1")
    assert attempted is not None and attempted.rollout_id == rollout.rollout_id, attempted
    assert attempted.attempt.status == "preparing" and attempted.status == "preparing"
    rid, aid = attempted.rollout_id, attempted.attempt.attempt_id
    out["rollout_id"], out["first_attempt_id"] = rid, aid

    # spans via REST
    seq = await client.get_next_span_sequence_id(rid, aid)
    span = agl.Span.from_attributes(
        attributes={"agentlightning.operation.name": "setup", "n": 1},
        rollout_id=rid,
        attempt_id=aid,
        sequence_id=seq,
        name="rest.span",
    )
    stored = await client.add_span(span)
    assert stored is not None and stored.span_id == span.span_id
    assert await client.add_span(span) is None, "duplicate span must return None"

    # spans via OTLP: Agent Lightning's tracer exports to {address}/v1/traces
    tracer = OtelTracer()
    tracer.init_worker(0, store=client)
    async with tracer.trace_context("agl-otlp", rollout_id=rid, attempt_id=aid) as otel:
        with otel.start_as_current_span("agent.run"):
            with otel.start_as_current_span("openai.chat.completion") as llm:
                llm.set_attribute("gen_ai.prompt.0.role", "user")
                llm.set_attribute("gen_ai.prompt.0.content", "What is 2+2?")
                llm.set_attribute("gen_ai.completion.0.content", "4")
            emit_reward(1.0)
    tracer.teardown_worker(0)

    spans = await client.query_spans(rid, "latest")
    out["span_names"] = [s.name for s in spans]
    out["sequence_ids"] = [s.sequence_id for s in spans]
    out["final_reward"] = find_final_reward(spans)
    assert len(await client.query_spans(rid, aid, name_contains="openai")) == 1
    assert (await client.query_spans(rid, limit=1, offset=1)).total == len(spans)
    out["rollout_status_after_spans"] = (await client.get_rollout_by_id(rid)).status

    # attempt updates with retry: failed -> requeuing -> dequeued again -> succeeded
    failed = await client.update_attempt(rid, aid, status="failed")
    assert failed.status == "failed"
    out["status_after_failure"] = (await client.get_rollout_by_id(rid)).status
    second = None
    for _ in range(10):
        got = await client.dequeue_rollout(worker_id="agl-worker-2")
        if got is not None and got.rollout_id == rid:
            second = got
            break
    assert second is not None, "requeued rollout was not dequeued again"
    out["second_attempt_sequence"] = second.attempt.sequence_id
    await client.update_attempt(rid, second.attempt.attempt_id, last_heartbeat_time=1.0e9 + 1)
    await client.update_attempt(rid, "latest", status="succeeded")

    # wait_for_rollouts (the reference client allows timeouts <= 0.1 s: poll)
    done = []
    for _ in range(50):
        done = await client.wait_for_rollouts(rollout_ids=[rid], timeout=0.1)
        if done:
            break
    assert done and done[0].status == "succeeded", done
    out["final_status"] = done[0].status

    # queries
    out["succeeded_rollouts"] = [
        r.rollout_id for r in await client.query_rollouts(status_in=["succeeded"])
    ]
    attempts = await client.query_attempts(rid)
    out["attempt_count"] = attempts.total
    latest_attempt = await client.get_latest_attempt(rid)
    assert latest_attempt is not None and latest_attempt.sequence_id == 2
    worker = await client.update_worker("agl-worker-1", heartbeat_stats={"ok": 1})
    assert worker.worker_id == "agl-worker-1"
    out["workers"] = sorted(w.worker_id for w in await client.query_workers())
    stats = await client.statistics()
    out["total_spans"] = stats["total_spans"]

    # an unknown rollout is a final (non-retried) client error
    try:
        await client.update_attempt("ro-missing", "at-missing", status="failed")
        out["unknown_rollout_status"] = None
    except aiohttp.ClientResponseError as exc:
        out["unknown_rollout_status"] = exc.status
    await client.close()
    out["conversion"] = await convert()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
