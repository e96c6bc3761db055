"""Agent Lightning 0.3's own runner against its own store server: the reference for
benchmarks/runner.py. Runs in the agl venv (``.ci/setup.d/40-agl-interop.sh``), not lightspan's.

``python agl_runner_reference.py STORE_URL N noop|3step [LLM_BASE_URL [RUNNERS]]``: enqueues N
rollouts into ``agl store`` at STORE_URL, runs ``LitAgentRunner`` (``OtelTracer``, 10 ms poll)
with an agent that returns a reward at once (``noop``) or calls the LLM three times, each call
in an ``openai.chat.completion`` span (``3step``), until the N rollouts are done, and prints
``{"seconds": wall time from the first dequeue poll to the last status}`` as JSON. RUNNERS > 1:
that many runner processes, each with its share of the rollouts, as ``agl.Trainer(n_runners=
RUNNERS)`` runs them (agl's way to run rollouts concurrently: one at a time per runner).
``3step-alone`` (STORE_URL ignored): the 3-step agent's ``rollout_async`` alone, in a loop.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
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


async def _enqueue(url: str, n: int) -> None:
    store = agl.LightningStoreClient(url)
    await store.add_resources({"p": agl.PromptTemplate(template="{x}", engine="f-string")})
    for i in range(n):
        await store.enqueue_rollout(input={"x": i}, mode="train")
    await store.close()


async def _run(
    url: str, n: int, kind: str, llm: str, index: int, start: Any
) -> tuple[float, float]:
    """One runner, as ``agl.Trainer`` runs each of its ``n_runners``: a ``LitAgentRunner`` with
    worker id ``index``, until it has done ``n`` rollouts. ``start()`` waits until every runner
    is ready (a barrier), so the timing excludes the processes' start. Returns (start, end)."""
    store = agl.LightningStoreClient(url)
    agent = NoopAgent() if kind == "noop" else ThreeStepAgent(llm)
    runner = agl.LitAgentRunner(tracer=agl.OtelTracer(), max_rollouts=n, poll_interval=0.01)
    runner.init(agent)
    runner.init_worker(index, store)
    start()
    t0 = time.time()
    await runner.iter()
    t1 = time.time()
    runner.teardown_worker(index)
    runner.teardown()
    await store.close()
    return t0, t1


def _child(url: str, n: int, kind: str, llm: str, index: int, barrier: Any, out: Any) -> None:
    out.put(asyncio.run(_run(url, n, kind, llm, index, barrier.wait)))


def main() -> None:
    url, n, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    llm = sys.argv[4] if len(sys.argv) > 4 else ""
    runners = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    if kind == "3step-alone":
        asyncio.run(agent_alone(n, llm))
        return
    asyncio.run(_enqueue(url, n))
    if runners == 1:
        t0, t1 = asyncio.run(_run(url, n, kind, llm, 0, lambda: None))
    else:
        # Processes, as agl.Trainer(n_runners=...) starts them: each its own runner and
        # client, its share of the rollouts; timed from the common start to the last end.
        ctx = multiprocessing.get_context("fork")
        barrier, out = ctx.Barrier(runners), ctx.Queue()
        shares = [n // runners + (1 if i < n % runners else 0) for i in range(runners)]
        procs = [
            ctx.Process(target=_child, args=(url, shares[i], kind, llm, i, barrier, out))
            for i in range(runners)
        ]
        for p in procs:
            p.start()
        spans = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        t0, t1 = min(s for s, _ in spans), max(e for _, e in spans)
    store = agl.LightningStoreClient(url)
    done = asyncio.run(store.query_rollouts(status_in=["succeeded"]))
    asyncio.run(store.close())
    print(json.dumps({"seconds": t1 - t0, "succeeded": len(done)}))


if __name__ == "__main__":
    main()
