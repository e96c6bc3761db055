"""Resource overlay, namespaced ids, the store-backed provider and the input mapping (logic)."""

from __future__ import annotations

import pytest

from lightspan.engine import (
    LLMResource,
    PromptTemplate,
    ResourceError,
    ResourceSet,
    Workflow,
    task,
)
from lightspan.runner import (
    InputError,
    InputMapping,
    ResourcesProvider,
    namespaced_id,
    overlay,
    workflow_of,
)
from lightspan.store import LLM, ProxyLLM
from lightspan.store import PromptTemplate as StorePrompt
from lightspan.store.backends.factory import open_store

BASE = ResourceSet(
    "wf-own",
    {
        "ask": PromptTemplate("Q: {q}"),
        "default": LLMResource("http://a/v1", "small", sampling_parameters={"max_tokens": 8}),
    },
)


def test_overlay_replaces_by_name_and_adds_per_step_entries() -> None:
    out = overlay(
        BASE,
        {
            "ask": {
                "resource_type": "prompt_template",
                "template": "New {q}",
                "engine": "f-string",
            },
            "default@judge": LLM(endpoint="http://b/v1", model="big"),
        },
        "wf:v2",
        version=3,
    )
    assert out.resources_id == "wf:v2" and out.version == 3
    assert out.prompt("ask").template == "New {q}"
    assert out.llm("default").model == "small"  # untouched
    assert out.llm("default", "judge").model == "big"  # <name>@<step>
    assert out.llm("default", "other").model == "small"  # falls back to <name>
    assert BASE.prompt("ask").template == "Q: {q}"  # the base is not modified


def test_overlay_main_llm_becomes_default_and_single_prompt_rule() -> None:
    out = overlay(
        BASE,
        {
            "main_llm": LLM(endpoint="http://verl/v1", model="policy"),
            "prompt_template": StorePrompt(template="APO says {q}", engine="f-string"),
        },
        "v1",
    )
    assert out.llm("default").model == "policy"
    assert out.llm("main_llm").model == "policy"
    # APO's one template under a name the workflow does not have replaces the workflow's only one
    assert out.prompt("ask").template == "APO says {q}"
    # an explicit "default" in the store set wins over main_llm
    both = overlay(
        BASE,
        {"main_llm": LLM(endpoint="e", model="m1"), "default": LLM(endpoint="e", model="m2")},
        "x",
    )
    assert both.llm("default").model == "m2"


def test_overlay_errors_name_the_entry() -> None:
    with pytest.raises(ResourceError, match="'ask' is a llm but the workflow's 'ask' is a prompt"):
        overlay(BASE, {"ask": LLM(endpoint="e", model="m")}, "bad")
    with pytest.raises(ResourceError, match="resource_type 'tool'"):
        overlay(BASE, {"t": {"resource_type": "tool"}}, "bad")
    with pytest.raises(ResourceError, match="lacks field 'model'"):
        overlay(BASE, {"default": {"resource_type": "llm", "endpoint": "e"}}, "bad")


def test_proxy_llm_is_routed_per_attempt() -> None:
    proxy = ProxyLLM(endpoint="http://proxy:9000/v1", model="m")
    out = overlay(BASE, {"main_llm": proxy}, "rs-1", rollout_id="ro-1", attempt_id="at-1")
    assert out.llm("default").endpoint == "http://proxy:9000/rollout/ro-1/attempt/at-1/v1"


def test_namespaced_ids() -> None:
    assert namespaced_id("qa", "v3") == "qa:v3"
    assert workflow_of("qa:v3") == "qa" and workflow_of("v3") is None
    with pytest.raises(ValueError, match="must not contain"):
        namespaced_id("a:b", "v1")


def test_input_mapping_forms_and_errors() -> None:
    m = InputMapping()
    assert m({"input": {"q": 1}, "expected": 2}) == ({"q": 1}, 2)
    assert m({"input": "text"}) == ("text", None)
    assert m({"q": 1, "expected": 2}) == ({"q": 1}, 2)
    assert m("plain") == ("plain", None)
    flat = InputMapping(expected_key="answer", required_keys=("question",))
    assert flat({"question": "2+2?", "answer": "4"}) == ({"question": "2+2?"}, "4")
    with pytest.raises(InputError, match=r"lacks required key\(s\) \['question'\]"):
        flat({"prompt": "x"})
    with pytest.raises(InputError, match="must be a mapping"):
        flat("x")
    assert m.to_rollout_input({"q": 1}, 2) == {"input": {"q": 1}, "expected": 2}


async def test_provider_latest_of_this_workflow_ttl_and_unknown_id() -> None:
    store = await open_store("memory")
    try:
        provider = ResourcesProvider(store, "wf", BASE, ttl=0.2)
        assert (await provider.get_resources()).resources_id == "wf-own"  # nothing published
        await store.update_resources(
            "wf:v1", {"ask": StorePrompt(template="v1 {q}", engine="f-string")}
        )
        await provider.get_resources()  # may still be cached as "nothing" for up to ttl
        await _sleep(0.25)
        got = await provider.get_resources()
        assert got.resources_id == "wf:v1" and got.prompt("ask").template == "v1 {q}"
        # another workflow's newer set is never taken
        await store.update_resources(
            "other:v9", {"ask": StorePrompt(template="no", engine="f-string")}
        )
        # an un-namespaced set is not either (unless adopt_unnamespaced)
        await store.add_resources({"ask": StorePrompt(template="plain", engine="f-string")})
        await _sleep(0.25)
        assert (await provider.get_resources()).resources_id == "wf:v1"
        provider.ttl = 60.0
        await provider.get_resources()
        fetches = provider.fetches
        for _ in range(20):
            await provider.get_resources()
        assert provider.fetches == fetches  # served from the cache within ttl
        # an explicit id wins, unless it is namespaced for another workflow
        assert (await provider.get_resources("other:v9")).resources_id == "wf:v1"
        with pytest.raises(ResourceError, match="unknown resources_id 'nope'"):
            await provider.get_resources("nope")
    finally:
        await store.close()


async def test_provider_falls_back_when_the_store_is_unreachable() -> None:
    from lightspan.store.api.client import LightningStoreClient
    from tests.fixtures.ports import free_port

    client = LightningStoreClient(f"http://127.0.0.1:{free_port()}", retries=0, connect_timeout=0.5)
    try:
        provider = ResourcesProvider(client, "wf", BASE, ttl=0.1)
        assert (await provider.get_resources()).resources_id == "wf-own"
        with pytest.raises(Exception, match="cannot connect"):
            await provider.get_resources("wf:v1")
    finally:
        await client.close()


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


async def test_publish_round_trips_engine_resources() -> None:
    from lightspan.runner import publish

    store = await open_store("memory")
    try:
        update = await publish(
            store,
            "wf",
            "cand-1",
            {
                "default@judge": LLMResource(
                    "http://b/v1", "big", sampling_parameters={"max_tokens": 4}
                ),
                "ask": PromptTemplate("Short {q}"),
            },
        )
        assert update.resources_id == "wf:cand-1"
        got = await ResourcesProvider(store, "wf", BASE, ttl=0).get_resources()
        assert got.resources_id == "wf:cand-1"
        assert got.llm("default", "judge").max_tokens == 4
        assert got.prompt("ask").template == "Short {q}"
    finally:
        await store.close()


async def test_a_published_routed_set_sends_long_inputs_to_their_variant() -> None:
    """What a trainer's routed winner publishes: ``<key>|input>N`` entries, overlaid on the
    workflow's own set and applied per run by the engine."""
    store = await open_store("memory")
    try:
        await store.update_resources(
            "wf:v1",
            {
                "default@judge": LLM(endpoint="http://a/v1", model="small"),
                "default@judge|input>10": LLM(endpoint="http://a/v1", model="big"),
            },
        )
        seen: list[str] = []

        def judge(value, ctx):  # type: ignore[no-untyped-def]
            seen.append(ctx.resources.llm("default", "judge").model)
            return value

        wf = Workflow("wf", task("judge", judge), resources=ResourcesProvider(store, "wf", BASE))
        await wf.run({"q": "short"})
        await wf.run({"q": "a longer question"})
        assert seen == ["small", "big"]
    finally:
        await store.close()
