"""One runner round trip with the real local model (prompts, completions, usage, reward)."""

from __future__ import annotations

import pytest

from lightspan.engine import LLMResource, PromptTemplate, ResourceSet, Workflow, llm_task
from lightspan.runner import WorkflowRunner
from lightspan.store.api.client import LightningStoreClient

pytestmark = pytest.mark.llm


async def test_runner_with_the_real_local_model(client: LightningStoreClient, llm_server) -> None:
    wf = Workflow(
        "arith",
        llm_task("answer", prompt="ask"),
        resources=ResourceSet(
            "arith-own",
            {
                "ask": PromptTemplate("What is {a} plus {b}? Reply with only the number."),
                "default": LLMResource(
                    llm_server.base_url,
                    llm_server.model,
                    sampling_parameters={"max_tokens": 8, "temperature": 0},
                ),
            },
        ),
        evaluator=lambda i, out, expected: float(str(expected) in out),
    )
    rows = [{"input": {"a": a, "b": b}, "expected": a + b} for a, b in [(2, 2), (3, 4)]]
    ids = [(await client.enqueue_rollout(r, mode="train")).rollout_id for r in rows]
    stats = await WorkflowRunner(wf, client, workers=2).serve(max_rollouts=len(rows))
    await wf.aclose()
    assert stats.succeeded == len(rows), stats
    for rid in ids:
        spans = (await client.query_spans(rid)).items
        (llm,) = [s for s in spans if s.name == "openai.chat.completion"]
        a = llm.attributes
        assert "plus" in a["gen_ai.prompt.0.content"]
        assert a["gen_ai.completion.0.content"].strip()
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        rewards = [s for s in spans if "agentlightning.reward.0.value" in s.attributes]
        assert len(rewards) == 1
        assert rewards[0].attributes["agentlightning.reward.0.value"] in (0.0, 1.0)
