"""Engine and span features the runner stage relies on: per-step resources, step and resource
names on LLM spans, estimated usage of cancelled calls, production inputs, one span listener
per run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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
from lightspan.instrumentation.listener import SpanListener
from tests.fixtures.fake_llm import FakeLLM
from tests.instrumentation.conftest import Traced, make_config, start_tracing


def _llm_spans(spans: list[Any]) -> dict[str, Any]:
    return {
        s.attributes["lightspan.step.name"]: s for s in spans if s.name == "openai.chat.completion"
    }


async def test_each_step_can_have_its_own_llm_and_prompt(traced: Traced, fake_llm: FakeLLM) -> None:
    resources = ResourceSet(
        "rs-steps",
        {
            "ask": PromptTemplate("Q: {q}"),
            "ask@a": PromptTemplate("A only: {q}"),
            "default": LLMResource(
                fake_llm.base_url, "small", sampling_parameters={"max_tokens": 9}
            ),
            "default@b": LLMResource(
                fake_llm.base_url, "big", sampling_parameters={"max_tokens": 5}
            ),
        },
    )
    wf = Workflow(
        "steps",
        sequence(
            "s",
            llm_task("a", prompt="ask"),
            task("wrap", lambda t: {"q": t}),
            llm_task("b", prompt="ask"),
        ),
        resources=resources,
    )
    result = await wf.run({"q": "x"})
    await wf.aclose()
    assert result.ok, result.error
    first, second = fake_llm.requests
    assert (first["model"], first["max_tokens"]) == ("small", 9)
    assert first["messages"][-1]["content"] == "A only: x"
    assert (second["model"], second["max_tokens"]) == ("big", 5)
    assert second["messages"][-1]["content"] == "Q: echo: A only: x"
    spans = _llm_spans(traced.spans())
    a, b = spans["a"].attributes, spans["b"].attributes
    assert (a["lightspan.llm.resource"], a["lightspan.llm.prompt_template"]) == ("default", "ask@a")
    assert (b["lightspan.llm.resource"], b["lightspan.llm.prompt_template"]) == ("default@b", "ask")
    assert a["lightspan.resources_id"] == b["lightspan.resources_id"] == "rs-steps"
    assert [c.model for c in result.llm_calls] == ["small", "big"]


@pytest.fixture
def slow_llm() -> Iterator[str]:
    """Answers at once, except prompts containing "slow", which wait 3 s (cancelled first)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body["messages"][-1]["content"]
            time.sleep(3.0 if "slow" in prompt else 0.1)
            data = json.dumps(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "ok"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": len(prompt) // 4,
                        "completion_tokens": 20,
                        "total_tokens": 20 + len(prompt) // 4,
                    },
                }
            ).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client went away (cancelled)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


async def test_a_cancelled_llm_call_records_estimated_tokens_and_cost(
    traced: Traced, slow_llm: str
) -> None:
    resources = ResourceSet(
        "rs-race",
        {
            "p": PromptTemplate("{input}"),
            "default": LLMResource(slow_llm, "m", sampling_parameters={"max_tokens": 16}),
        },
    )

    async def fast(value: Any) -> str:
        import asyncio

        await asyncio.sleep(0.5)
        return "fast"

    wf = Workflow(
        "race",
        fork("race", [llm_task("slow", prompt="p"), task("quick", fast)], join="first"),
        resources=resources,
        prices={"m": {"input": 1.0, "output": 2.0}},
    )
    warm = await wf.run("warm up the rates")  # answered: teaches tokens/s and chars/token
    assert warm.ok and not warm.llm_calls[0].estimated
    result = await wf.run("slow " * 40)
    await wf.aclose()
    assert result.ok and result.output == "fast"
    (call,) = result.llm_calls
    assert call.estimated and call.step == "slow"
    # the warm-up prompt had 17 characters and 17 // 4 = 4 tokens: 4.25 characters per token
    assert call.input_tokens == round(200 / (17 / 4))
    assert call.output_tokens == 16  # ~0.5 s at the learnt ~200 tok/s, capped by max_tokens
    assert call.cost == pytest.approx((call.input_tokens * 1.0 + 16 * 2.0) / 1e6)
    assert result.cost == call.cost
    cancelled = [
        s
        for s in traced.spans()
        if s.name == "openai.chat.completion" and s.attributes.get("lightspan.cancelled")
    ]
    assert len(cancelled) == 1
    a = cancelled[0].attributes
    assert a["lightspan.llm.usage_estimated"] is True
    assert a["gen_ai.usage.output_tokens"] == 16
    assert a["lightspan.llm.cost"] == pytest.approx(call.cost)


async def test_production_runs_record_input_and_expected_or_a_digest() -> None:
    wf = Workflow("prod", task("t", lambda v: v))
    for capture in (True, False):
        t = start_tracing(make_config(capture_content=capture))
        try:
            await wf.run({"q": "secret"}, expected="42")
            (root,) = [s for s in t.spans() if s.name == "invoke_workflow prod"]
        finally:
            t.handle.shutdown()
        a = root.attributes
        if capture:
            assert json.loads(a["lightspan.rollout.input"]) == {"q": "secret"}
            assert json.loads(a["lightspan.rollout.expected"]) == "42"
        else:
            assert "lightspan.rollout.input" not in a
            assert a["lightspan.rollout.input_digest"].startswith("sha256:")
            assert a["lightspan.rollout.expected_digest"].startswith("sha256:")
            assert not any("secret" in str(v) for v in a.values())


async def test_a_run_is_traced_by_one_span_listener_only(traced: Traced) -> None:
    """A runner's own listener (passed to run) claims the run: the process-wide
    instrumentation does not trace it a second time; other runs are untouched."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    own = SpanListener(provider.get_tracer("runner"))
    wf = Workflow("claim", task("t", lambda v: v))
    await wf.run(1, rollout_id="ro-1", attempt_id="at-1", listeners=(own,))
    assert {s.name for s in exporter.get_finished_spans()} == {"task t", "invoke_workflow claim"}
    assert traced.spans() == []
    await wf.run(2)
    assert len(traced.spans()) == 2
    assert len(exporter.get_finished_spans()) == 2
