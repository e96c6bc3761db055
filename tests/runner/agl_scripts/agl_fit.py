"""``agl.Trainer(...).fit(LitWorkflow(wf))`` in Agent Lightning's own process; prints a report.

Run in the agl venv with ``PYTHONPATH=<repo>/src``: ``python agl_fit.py agentops|otel``.
A small algorithm (agl's ``@algo``) publishes resources that overlay the workflow's own (an
``ask`` prompt template and VERL's ``main_llm`` as a ``ProxyLLM`` on a fake vLLM-like server),
enqueues the rows, waits, then reads each rollout's spans from agl's store through agl's own
adapters (``TraceToMessages``, ``TracerTraceToTriplet``, ``find_final_reward``). The last
stdout line is the JSON report the pytest side asserts on.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import agentlightning as agl
from agentlightning.adapter import TracerTraceToTriplet, TraceToMessages
from agentlightning.reward import find_final_reward
from fake_openai import FakeOpenAI

from lightspan.engine import LLMResource, PromptTemplate, ResourceSet, Workflow, llm_task
from lightspan.runner.agl import LitWorkflow

ROWS = [
    {"question": "say hi", "expected": "hi"},
    {"question": "say bye", "expected": "hello"},
    {"question": "name a colour", "expected": "colour"},
    {"input": {"question": "wrapped form"}, "expected": "wrapped"},
    {"not_a_question": "fails: the template needs 'question'", "expected": "x"},
]


def evaluator(inp: Any, output: Any, expected: Any) -> float:
    return 1.0 if str(expected) in str(output) else 0.0


def make_workflow() -> Workflow:
    own = ResourceSet(
        "rs-own",
        {
            # Not reachable: a run that used it would fail, so success proves the overlay.
            "default": LLMResource(endpoint="http://127.0.0.1:9/v1", model="unused"),
            "ask": PromptTemplate("OWN PROMPT {question}"),
        },
    )
    return Workflow(
        "agl-echo", llm_task("answer", prompt="ask"), resources=own, evaluator=evaluator
    )


def main() -> None:
    tracer_kind = sys.argv[1]
    fake = FakeOpenAI(return_ids=True).start()
    report: dict[str, Any] = {"tracer": tracer_kind}

    @agl.algo
    async def probe(
        *, store: agl.LightningStore, train_dataset: Any = None, val_dataset: Any = None
    ):
        update = await store.add_resources(
            {
                "ask": agl.PromptTemplate(template="Q: {question}", engine="f-string"),
                "main_llm": agl.ProxyLLM(endpoint=fake.base_url, model="fake-model"),
            }
        )
        ids = []
        for row in train_dataset:
            r = await store.enqueue_rollout(
                input=row, mode="train", resources_id=update.resources_id
            )
            ids.append(r.rollout_id)
        done: list[Any] = []
        for _ in range(120):
            done = await store.wait_for_rollouts(rollout_ids=ids, timeout=0)
            if len(done) == len(ids):
                break
            await asyncio.sleep(0.5)
        by_id = {r.rollout_id: r for r in done}
        rollouts = []
        for rid in ids:
            rollout = by_id.get(rid)
            attempts = await store.query_attempts(rid)
            spans = list(await store.query_spans(rid, attempt_id="latest"))
            messages = TraceToMessages().adapt(spans)
            triplets = TracerTraceToTriplet().adapt(spans)
            rollouts.append(
                {
                    "rollout_id": rid,
                    "attempt_id": attempts[-1].attempt_id if attempts else None,
                    "status": rollout.status if rollout else None,
                    "span_names": [s.name for s in spans],
                    "final_reward": find_final_reward(spans),
                    "messages": [m["messages"] for m in messages],
                    "triplets": [
                        {
                            "prompt_ids": t.prompt.get("token_ids"),
                            "response_ids": t.response.get("token_ids"),
                            "reward": t.reward,
                        }
                        for t in triplets
                    ],
                }
            )
        report["resources_id"] = update.resources_id
        report["rollouts"] = rollouts

    trainer = agl.Trainer(
        algorithm=probe,
        n_runners=2,
        tracer=agl.OtelTracer() if tracer_kind == "otel" else None,
    )
    try:
        trainer.fit(LitWorkflow(make_workflow()), train_dataset=ROWS)
    finally:
        fake.stop()
    report["paths"] = fake.paths
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
