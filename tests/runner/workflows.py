"""Workflows the runner tests serve (the LLM ones talk to the fake LLM server)."""

from __future__ import annotations

import asyncio
from typing import Any

from lightspan.engine import (
    LLMResource,
    PromptTemplate,
    ResourceSet,
    Workflow,
    fork,
    llm_task,
    sequence,
    task,
)


def exact(_input: Any, output: Any, expected: Any) -> float:
    return float(output == expected)


def qa_workflow(base_url: str, name: str = "qa") -> Workflow:
    """``ask`` -> the fake LLM (answers ``echo: <prompt>``) -> strip the echo; reward = exact."""
    resources = ResourceSet(
        f"{name}-own",
        {
            "ask": PromptTemplate("Q: {q}"),
            "default": LLMResource(base_url, "fake-small", sampling_parameters={"max_tokens": 16}),
        },
    )
    return Workflow(
        name,
        sequence(
            "pipeline",
            llm_task("answer", prompt="ask"),
            task("strip", lambda s: s.removeprefix("echo: ")),
        ),
        resources=resources,
        evaluator=exact,
    )


async def _maybe_fail(value: Any) -> Any:
    if isinstance(value, dict) and value.get("boom"):
        raise RuntimeError(f"boom on {value['boom']}")
    await asyncio.sleep(float(value.get("sleep", 0)) if isinstance(value, dict) else 0)
    return value


def _const(i: int) -> Any:
    return lambda _value: i


def wide_workflow(width: int = 12, name: str = "wide") -> Workflow:
    """A fork of ``width`` tasks (many spans per attempt), reward 1; input may ask to fail/sleep."""
    branches = [task(f"b{i}", _const(i)) for i in range(width)]
    return Workflow(
        name,
        sequence(
            "root",
            task("check", _maybe_fail),
            fork("fan", branches, reducer=lambda d: sum(d.values())),
        ),
        evaluator=lambda i, o, e: 1.0,
    )
