"""An LLM task against the real local model server (not a fake): tokens are the model's."""

from __future__ import annotations

import pytest

from lightspan.engine import (
    LLMResource,
    PriceTable,
    PromptTemplate,
    ResourceSet,
    Workflow,
    fork,
    llm_task,
)

pytestmark = pytest.mark.llm


async def test_fork_of_llm_tasks_against_the_local_model(llm_server):
    res = ResourceSet(
        "rs-real",
        {
            "ask": PromptTemplate("{question} Reply with one word."),
            "short": LLMResource(
                llm_server.base_url, llm_server.model, sampling_parameters={"max_tokens": 8}
            ),
            "long": LLMResource(
                llm_server.base_url, llm_server.model, sampling_parameters={"max_tokens": 24}
            ),
        },
    )
    w = Workflow(
        "real",
        fork(
            "f", [llm_task("a", prompt="ask", llm="short"), llm_task("b", prompt="ask", llm="long")]
        ),
        resources=res,
        prices=PriceTable({llm_server.model: {"input": 1.0, "output": 1.0}}),
    )
    try:
        r = await w.run({"question": "What color is the sky?"})
    finally:
        await w.aclose()
    assert r.ok, r.error
    assert set(r.output) == {"a", "b"} and all(isinstance(v, str) for v in r.output.values())
    by_step = {c.step: c for c in r.llm_calls}
    # Real usage from the server: the prompt has a dozen tokens; output is capped by max_tokens.
    assert by_step["a"].input_tokens > 5 and 0 < by_step["a"].output_tokens <= 8
    assert 0 < by_step["b"].output_tokens <= 24
    assert r.cost == pytest.approx((r.input_tokens + r.output_tokens) / 1e6)
