"""Agent Lightning 0.3's own runner against its own store server: the reference for
benchmarks/runner.py. Runs in the agl venv (``.ci/setup.d/40-agl-interop.sh``), not lightspan's.

``python agl_runner_reference.py STORE_URL N noop|3step [LLM_BASE_URL]``: enqueues N rollouts
into ``agl store`` at STORE_URL, runs one ``LitAgentRunner`` (``OtelTracer``, 10 ms poll) with
an agent that returns a reward at once (``noop``) or calls the LLM three times, each call in an
``openai.chat.completion`` span (``3step``), until the N rollouts are done, and prints
``{"seconds": wall time from the first dequeue poll to the last status}`` as JSON.
``3step-alone`` (STORE_URL ignored): the 3-step agent's ``rollout_async`` alone, in a loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import agentlightning as agl
import openai
from opentelemetry import trace


class NoopAgent(agl.LitAgent[Any]):
    async def rollout_async(self, task: Any, resources: Any, rollout: Any) -> float:
        return 1.0


class ThreeStepAgent(agl.LitAgent[Any]):
    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key="x")

    async def rollout_async(self, task: Any, resources: Any, rollout: Any) -> float:
        tracer = trace.get_tracer("reference")
        text = str(task)
        for step in range(3):
            with tracer.start_as_current_span("openai.chat.completion") as span:
                resp = await self.client.chat.completions.create(
                    model="fake", messages=[{"role": "user", "content": f"{step} {text}"}]
                )
                text = resp.choices[0].message.content or ""
                span.set_attribute("gen_ai.response.id", resp.id)
        return 1.0


async def agent_alone(n: int, base_url: str) -> None:
    """The 3-step agent's ``rollout_async`` called ``n`` times in a loop, no runner, tracer or
    store: the agent's own cost, which the runner row's time includes."""
    agent = ThreeStepAgent(base_url)
    t0 = time.perf_counter()
    for i in range(n):
        await agent.rollout_async({"x": i}, {}, None)
    print(json.dumps({"seconds": time.perf_counter() - t0, "succeeded": n}))


async def main() -> None:
    url, n, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kind == "3step-alone":
        await agent_alone(n, sys.argv[4])
        return
    store = agl.LightningStoreClient(url)
    await store.add_resources({"p": agl.PromptTemplate(template="{x}", engine="f-string")})
    for i in range(n):
        await store.enqueue_rollout(input={"x": i}, mode="train")
    agent = NoopAgent() if kind == "noop" else ThreeStepAgent(sys.argv[4])
    runner = agl.LitAgentRunner(tracer=agl.OtelTracer(), max_rollouts=n, poll_interval=0.01)
    runner.init(agent)
    runner.init_worker(0, store)
    t0 = time.perf_counter()
    await runner.iter()
    seconds = time.perf_counter() - t0
    runner.teardown_worker(0)
    runner.teardown()
    done = await store.query_rollouts(status_in=["succeeded"])
    await store.close()
    print(json.dumps({"seconds": seconds, "succeeded": len(done)}))


if __name__ == "__main__":
    asyncio.run(main())
