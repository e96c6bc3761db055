"""LLM tasks against a fake OpenAI-compatible server: resources, usage, cost, events."""

from __future__ import annotations

import pytest

from lightspan.engine import (
    BaseListener,
    LLMCallError,
    LLMResource,
    PriceTable,
    PromptTemplate,
    ResourceError,
    ResourceSet,
    StaticResources,
    Workflow,
    add_listener,
    fork,
    llm_task,
    remove_listener,
    task,
)


def resources(base_url: str, rid: str = "rs-1", template: str = "Q: {question}") -> ResourceSet:
    return ResourceSet(
        rid,
        {
            "ask": PromptTemplate(template),
            "sys": PromptTemplate("You answer in {style} style.", engine="f-string"),
            "jinja": PromptTemplate("Items: {{ items | join(', ') }}", engine="jinja"),
            "default": LLMResource(
                base_url, "small-model", sampling_parameters={"max_tokens": 32, "temperature": 0}
            ),
            "big": LLMResource(base_url, "big-model", sampling_parameters={"max_tokens": 64}),
        },
    )


PRICES = PriceTable({"small-model": {"input": 1.0, "output": 2.0}})


async def test_llm_task_renders_prompt_sends_sampling_and_records_usage_and_cost(fake_llm):
    w = Workflow(
        "qa",
        llm_task("answer", prompt="ask", system="sys"),
        resources=resources(fake_llm.base_url),
        prices=PRICES,
    )
    r = await w.run({"question": "two plus two?", "style": "terse"})
    assert r.ok, r.error
    assert r.output == "echo: Q: two plus two?"
    req = fake_llm.requests[-1]
    assert req["model"] == "small-model" and req["max_tokens"] == 32 and req["temperature"] == 0
    assert req["messages"][0] == {"role": "system", "content": "You answer in terse style."}
    (call,) = r.llm_calls
    assert call.input_tokens == 4 + 5 and call.output_tokens == 5
    assert call.cost == pytest.approx((9 * 1.0 + 5 * 2.0) / 1e6) and call.priced
    assert r.resources_id == "rs-1"
    await w.aclose()


async def test_unpriced_model_costs_zero_and_says_so(fake_llm):
    w = Workflow(
        "qa", llm_task("a", prompt="ask", llm="big"), resources=resources(fake_llm.base_url)
    )
    r = await w.run({"question": "x"})
    assert r.llm_calls[0].cost == 0 and not r.llm_calls[0].priced
    await w.aclose()


async def test_jinja_template_and_scalar_input_bound_to_input(fake_llm):
    w = Workflow(
        "qa",
        fork("f", [llm_task("j", prompt="jinja"), task("echo", lambda x: x)]),
        resources=resources(fake_llm.base_url),
    )
    r = await w.run({"items": ["a", "b"]})
    assert r.output["j"] == "echo: Items: a, b"
    scalar = ResourceSet(
        "rs-2",
        {"p": PromptTemplate("Say {input}"), **{"default": LLMResource(fake_llm.base_url, "m")}},
    )
    r2 = await Workflow("s", llm_task("a", prompt="p"), resources=scalar).run("hi")
    assert r2.output == "echo: Say hi"


async def test_missing_template_variable_is_a_clear_error(fake_llm):
    w = Workflow("qa", llm_task("a", prompt="ask"), resources=resources(fake_llm.base_url))
    r = await w.run({"nope": 1})
    assert isinstance(r.error, ResourceError) and "question" in str(r.error)
    r = await Workflow("qa", llm_task("a", prompt="missing"), resources=resources("http://x")).run(
        {}
    )
    assert isinstance(r.error, ResourceError) and "missing" in str(r.error)


async def test_resources_resolved_per_run_and_recorded(fake_llm):
    provider = StaticResources(resources(fake_llm.base_url, "rs-1", "v1 {question}"))
    w = Workflow("qa", llm_task("a", prompt="ask"), resources=provider)
    assert (await w.run({"question": "q"})).output == "echo: v1 q"
    provider.add(resources(fake_llm.base_url, "rs-2", "v2 {question}"))
    r = await w.run({"question": "q"})
    assert r.output == "echo: v2 q" and r.resources_id == "rs-2"
    r = await w.run({"question": "q"}, resources_id="rs-1")
    assert r.output == "echo: v1 q" and r.resources_id == "rs-1"


async def test_endpoint_errors_name_endpoint_and_model(fake_llm):
    fake_llm.fail_next = 10
    w = Workflow("qa", llm_task("a", prompt="ask"), resources=resources(fake_llm.base_url))
    r = await w.run({"question": "q"})
    assert isinstance(r.error, LLMCallError)
    assert fake_llm.base_url in str(r.error) and "small-model" in str(r.error)


async def test_ctx_chat_from_a_task_is_recorded(fake_llm):
    async def plan(x, ctx):
        return await ctx.chat(f"plan {x}")

    w = Workflow("p", task("plan", plan), resources=resources(fake_llm.base_url), prices=PRICES)
    r = await w.run("it")
    assert r.output == "echo: plan it" and len(r.llm_calls) == 1 and r.cost > 0


async def test_listeners_see_llm_calls_with_request_and_response(fake_llm):
    seen = []

    class L(BaseListener):
        def on_llm_end(self, call):
            seen.append(call)

    listener = L()
    add_listener(listener)
    try:
        w = Workflow(
            "qa", llm_task("a", prompt="ask"), resources=resources(fake_llm.base_url), prices=PRICES
        )
        await w.run({"question": "q"})
    finally:
        remove_listener(listener)
    (call,) = seen
    assert call.request_model == "small-model" and call.max_tokens == 32
    assert call.response_id and call.completion == "echo: Q: q"
    assert call.input_tokens > 0 and call.cost > 0 and call.resources_id == "rs-1"
    assert call.prompt_template == "ask" and call.step.name == "a" and call.status == "ok"
