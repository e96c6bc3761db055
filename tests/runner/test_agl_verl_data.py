"""VERL-ready data in lightspan's own venv: proxy routes and token ids on LLM spans.

A fake vLLM-like server (tests/runner/agl_scripts/fake_openai.py, real HTTP on 127.0.0.1)
returns token ids; the run's LLM span must carry them under the keys Agent Lightning's
``TracerTraceToTriplet`` reads, and a ``proxy_llm`` endpoint must be routed per attempt.
The same data read by agl's own adapters is asserted in test_agl_litworkflow.py.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lightspan.engine import LLMResource, PromptTemplate, ResourceSet, Workflow, llm_task
from lightspan.instrumentation.listener import SpanListener

sys.path.insert(0, str(Path(__file__).parent / "agl_scripts"))
from fake_openai import FakeOpenAI, token_ids


@pytest.fixture
def fake_vllm() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(return_ids=True).start()
    yield server
    server.stop()


def _run(wf: Workflow, **kw: object) -> tuple[object, list]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    listener = SpanListener(provider.get_tracer("t"), capture_runner_content=True)

    async def go() -> object:
        try:
            return await wf.run({"q": "two words"}, listeners=(listener,), **kw)
        finally:
            await wf.aclose()

    result = asyncio.run(go())
    return result, list(exporter.get_finished_spans())


def _workflow(kind: str, url: str) -> Workflow:
    res = ResourceSet(
        "rs-1",
        {
            "default": LLMResource(endpoint=url, model="m", resource_type=kind),  # type: ignore[arg-type]
            "p": PromptTemplate("ask {q}"),
        },
    )
    return Workflow("verl", llm_task("a", prompt="p"), resources=res)


def test_agl_proxy_llm_routed_and_token_ids_on_span(fake_vllm: FakeOpenAI) -> None:
    wf = _workflow("proxy_llm", fake_vllm.base_url)
    result, spans = _run(wf, rollout_id="ro-abc", attempt_id="at-def", mode="train")
    assert result.ok, result.error
    assert fake_vllm.paths == ["/rollout/ro-abc/attempt/at-def/v1/chat/completions"]
    (llm,) = [s for s in spans if s.name == "openai.chat.completion"]
    assert list(llm.attributes["prompt_token_ids"]) == token_ids("ask two words")
    assert list(llm.attributes["response_token_ids"]) == token_ids("echo: ask two words")


def test_agl_plain_llm_not_routed_and_no_ids_without_server_ids(fake_vllm: FakeOpenAI) -> None:
    fake_vllm.return_ids = False
    wf = _workflow("llm", fake_vllm.base_url)
    result, spans = _run(wf, rollout_id="ro-abc", attempt_id="at-def", mode="train")
    assert result.ok, result.error
    assert fake_vllm.paths == ["/v1/chat/completions"]
    (llm,) = [s for s in spans if s.name == "openai.chat.completion"]
    assert "prompt_token_ids" not in llm.attributes
    assert "response_token_ids" not in llm.attributes


def test_agl_proxy_llm_round_trips_through_store_format() -> None:
    res = ResourceSet(
        "rs-x", {"main_llm": LLMResource("http://h:1/v1", "m", resource_type="proxy_llm")}
    )
    again = ResourceSet.from_dict("rs-x", res.to_dict())
    assert again.resources["main_llm"].resource_type == "proxy_llm"
    routed = again.for_rollout("ro-1", "at-2").llm("main_llm")
    assert routed.endpoint == "http://h:1/rollout/ro-1/attempt/at-2/v1"
    no_v1 = LLMResource("http://h:1/", "m", resource_type="proxy_llm").for_rollout("r", "a")
    assert no_v1.endpoint == "http://h:1/rollout/r/attempt/a"
