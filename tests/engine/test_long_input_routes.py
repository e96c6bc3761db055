"""Long-input variants in a resource set: ``<key>|input>N`` stands in for ``<key>`` in runs
whose input is longer than N characters (what a trainer's routed winner publishes)."""

from __future__ import annotations

import re

import pytest

from lightspan.engine import (
    ResourceError,
    ResourceSet,
    StaticResources,
    Workflow,
    WorkflowDefinitionError,
    input_chars,
    task,
)
from lightspan.engine.loader import parse_resources


def _llm(model: str) -> dict:
    return {"resource_type": "llm", "endpoint": "http://127.0.0.1:1/v1", "model": model}


ROUTED = ResourceSet.from_dict(
    "wf:v2",
    {
        "default": _llm("small"),
        "default@plan": _llm("small-plan"),
        "default@plan|input>10": _llm("big"),
        "default@plan|input>20": _llm("huge"),
        "other": _llm("other"),
    },
)


def test_input_chars_counts_the_text_of_an_input_not_its_keys():
    assert input_chars("abcd") == 4
    assert input_chars({"text": "abcd", "meta": {"lang": "en"}, "n": 123}) == 4 + 2 + 3
    assert input_chars(["ab", ("c",)]) == 3
    assert input_chars(None) == 0


@pytest.mark.parametrize(
    ("text", "plan", "default"),
    [("x" * 10, "small-plan", "small"), ("x" * 11, "big", "small"), ("x" * 21, "huge", "small")],
)
def test_the_longest_threshold_an_input_exceeds_picks_the_variant(text, plan, default):
    chosen = ROUTED.for_input({"text": text})
    assert chosen.llm("default", "plan").model == plan
    assert chosen.llm("default").model == default
    assert chosen.llm("other").model == "other"
    assert not any("|input>" in k for k in chosen.resources)
    assert chosen.resources_id == "wf:v2"


def test_a_set_without_variants_is_returned_as_is():
    plain = ResourceSet.from_dict("p", {"default": _llm("small")})
    assert plain.for_input("x" * 1000) is plain


@pytest.mark.parametrize("name", ["default|input>ten", "|input>3", "default|input>-1"])
def test_a_malformed_threshold_is_refused_naming_the_resource(name):
    with pytest.raises(ResourceError, match=r"a long-input variant is named <key>\|input>N"):
        ResourceSet.from_dict("bad", {"default": _llm("a"), name: _llm("b")})
    section = {"llms": {"default": {"endpoint": "http://x/v1", "model": "m"}, name: {}}}
    section["llms"][name] = {"endpoint": "http://x/v1", "model": "m2"}
    with pytest.raises(WorkflowDefinitionError, match=rf"^resources: resource '{re.escape(name)}'"):
        parse_resources(section)


async def test_a_run_resolves_its_resources_for_its_own_input():
    seen: list[str] = []

    def model_of_plan(value, ctx):  # type: ignore[no-untyped-def]
        seen.append(ctx.resources.llm("default", "plan").model)
        return value

    wf = Workflow("w", task("t", model_of_plan), resources=StaticResources(ROUTED))
    await wf.run("short")
    await wf.run({"text": "x" * 15})
    await wf.run("x" * 15, resources=ROUTED)  # a runner's already resolved set
    assert seen == ["small-plan", "big", "big"]
