"""Agent Lightning 0.3's own APO driving lightspan runners through a lightspan store server.

Run in the agl venv: ``python agl_apo.py STORE_URL LLM_BASE_URL MODEL``. APO talks only to the
store (ours, through agl's own ``LightningStoreClient``): it publishes prompt versions, enqueues
rollouts with their ``resources_id`` and reads back their spans through ``TraceToMessages`` and
``find_final_reward``. Its critic and editor are the local model behind LLM_BASE_URL. Nothing
in this process runs a rollout: lightspan's ``runner serve`` processes do. Beam settings are
the smallest that still make one edit (1 x 1 x 1). The last stdout line is a JSON report.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from typing import Any

import agentlightning as agl
from agentlightning.adapter import TraceToMessages
from agentlightning.reward import find_final_reward
from openai import AsyncOpenAI

TRAIN = [
    {"question": "What is the capital of France?", "expected": "Paris"},
    {"question": "What colour is the sky on a clear day?", "expected": "blue"},
]
VAL = [
    {"question": "What is the capital of Italy?", "expected": "Rome"},
    {"question": "How many legs does a cat have?", "expected": "4"},
]
SEED = "Answer in one word. {question}"
MAX_TOKENS = 256


async def main() -> None:
    url, llm_url, model = sys.argv[1], sys.argv[2], sys.argv[3]
    client = AsyncOpenAI(base_url=llm_url, api_key="not-needed", max_retries=1, timeout=120)
    # APO calls its critic and editor without max_tokens; the small local model can then ramble
    # until its context is full (minutes on 2 cores), which timed the test out. Cap each answer:
    # a critique or an edited one-line prompt fits in a few hundred tokens.
    completions = client.chat.completions
    completions.create = functools.partial(completions.create, max_tokens=MAX_TOKENS)  # type: ignore[method-assign]
    apo = agl.APO(
        client,
        gradient_model=model,
        apply_edit_model=model,
        diversity_temperature=0.7,
        gradient_batch_size=1,
        val_batch_size=2,
        beam_width=1,
        branch_factor=1,
        beam_rounds=1,
        rollout_batch_timeout=150,
    )
    store = agl.LightningStoreClient(url)
    apo.set_store(store)
    apo.set_initial_resources({"ask": agl.PromptTemplate(template=SEED, engine="f-string")})
    adapter = TraceToMessages()  # agl keeps only a weak reference to it
    apo.set_adapter(adapter)
    await apo.run(train_dataset=TRAIN, val_dataset=VAL)

    rollouts: list[dict[str, Any]] = []
    for r in await store.query_rollouts():
        attempts = await store.query_attempts(r.rollout_id)
        spans = list(await store.query_spans(r.rollout_id, attempt_id="latest"))
        prompts = [
            s.attributes.get("gen_ai.prompt.0.content")
            for s in spans
            if s.name == "openai.chat.completion"
        ]
        messages = TraceToMessages().adapt(spans)
        rollouts.append(
            {
                "rollout_id": r.rollout_id,
                "input": r.input,
                "resources_id": r.resources_id,
                "status": r.status,
                "workers": [a.worker_id for a in attempts],
                "final_reward": find_final_reward(spans),
                "prompts": prompts,
                "n_messages": len(messages),
            }
        )
    resources = {}
    for update in await store.query_resources():
        ask = update.resources.get("ask")
        resources[update.resources_id] = ask.template if ask is not None else None
    best = apo.get_best_prompt()
    await store.close()
    print(json.dumps({"rollouts": rollouts, "resources": resources, "best": best.template}))


if __name__ == "__main__":
    asyncio.run(main())
