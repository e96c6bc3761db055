"""Span trees, attributes, rewards, errors and cancellation for every step kind."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from lightspan.engine import (
    LLMResource,
    PriceTable,
    PromptTemplate,
    ResourceSet,
    Workflow,
    fork,
    llm_task,
    organizer_worker,
    sequence,
    task,
)
from lightspan.instrumentation.sampling import KEEP_ATTRIBUTE
from tests.instrumentation.conftest import Traced, by_name, make_config, shape, start_tracing


async def ident(x):
    return x


async def test_sequence_of_tasks_is_one_trace_with_a_root_and_a_span_per_step(traced: Traced):
    wf = Workflow("wf", sequence("s", task("a", ident), task("b", lambda x: x + 1)))
    r = await wf.run(1)
    assert r.ok
    spans = traced.spans()
    assert shape(spans) == (
        "invoke_workflow wf",
        (("sequence s", (("task a", ()), ("task b", ()))),),
    )
    root = by_name(spans)["invoke_workflow wf"]
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["gen_ai.workflow.name"] == "wf"
    assert root.attributes["lightspan.run.id"] == r.run_id
    assert root.attributes["lightspan.rollout.origin"] == "production"
    assert KEEP_ATTRIBUTE not in root.attributes
    assert root.attributes["lightspan.run.status"] == "ok"
    assert root.status.status_code is StatusCode.UNSET
    # A production run gets rollout ids of its own, on every span and on the result.
    assert r.rollout_id.startswith("ro-") and len(r.rollout_id) == 15
    assert r.attempt_id.startswith("at-") and len(r.attempt_id) == 11
    for s in spans:
        assert s.attributes["agentlightning.rollout_id"] == r.rollout_id
        assert s.attributes["agentlightning.attempt_id"] == r.attempt_id
    a = by_name(spans)["task a"]
    assert a.attributes["lightspan.step.kind"] == "task"
    assert a.attributes["lightspan.step.name"] == "a"
    assert a.kind is SpanKind.INTERNAL


async def test_fork_has_one_span_per_branch_and_records_the_join(traced: Traced):
    wf = Workflow("wf", fork("f", {"x": task("x", ident), "why": sequence("sy", task("y", ident))}))
    assert (await wf.run(1)).ok
    spans = traced.spans()
    # A branch and the step it runs are one span, marked with the branch's name.
    assert shape(spans) == (
        "invoke_workflow wf",
        (("fork f", (("sequence sy", (("task y", ()),)), ("task x", ()))),),
    )
    f = by_name(spans)["fork f"]
    assert f.attributes["lightspan.join.policy"] == "all"
    assert f.attributes["lightspan.join.failed"] == ()
    assert f.attributes["lightspan.join.cancelled"] == ()
    assert f.attributes["lightspan.join.winners"] == ("x", "why")
    bx = by_name(spans)["task x"]
    assert bx.attributes["lightspan.branch.name"] == "x"
    assert bx.parent.span_id == f.context.span_id
    sy = by_name(spans)["sequence sy"]
    assert sy.attributes["lightspan.branch.name"] == "why"
    assert "lightspan.branch.name" not in by_name(spans)["task y"].attributes


async def test_fork_majority_records_the_branches_it_never_started(traced: Traced):
    wf = Workflow(
        "wf", fork("f", [task("a", ident), task("b", ident), task("c", ident)], join="majority")
    )
    assert (await wf.run(1)).output == {"a": 1, "b": 1}
    spans = by_name(traced.spans())
    assert "task c" not in spans  # never started: no span, no cost
    f = spans["fork f"]
    assert f.attributes["lightspan.join.policy"] == "majority"
    assert f.attributes["lightspan.join.winners"] == ("a", "b")
    assert f.attributes["lightspan.join.skipped"] == ("c",)


async def test_fork_first_marks_the_losers_cancelled_not_failed(traced: Traced):
    async def fast(x):
        return "fast"

    async def slow(x):
        await asyncio.sleep(10)

    wf = Workflow("wf", fork("f", [task("fast", fast), task("slow", slow)], join="first"))
    r = await wf.run(None)
    assert r.ok and r.output == "fast"
    spans = by_name(traced.spans())
    f = spans["fork f"]
    assert f.attributes["lightspan.join.policy"] == "first"
    assert f.attributes["lightspan.join.winners"] == ("fast",)
    assert f.attributes["lightspan.join.cancelled"] == ("slow",)
    assert f.status.status_code is StatusCode.UNSET
    s = spans["task slow"]
    assert s.attributes["lightspan.cancelled"] is True
    assert s.attributes["lightspan.branch.name"] == "slow"
    assert s.status.status_code is not StatusCode.ERROR
    assert not [e for e in s.events if e.name == "exception"]
    assert "lightspan.cancelled" not in spans["task fast"].attributes


async def test_organizer_worker_has_organizer_and_one_worker_span_per_item(traced: Traced):
    wf = Workflow(
        "wf",
        organizer_worker(
            "ow", task("plan", lambda x: list(range(x))), task("work", ident), concurrency=2
        ),
    )
    assert (await wf.run(3)).ok
    spans = traced.spans()
    assert shape(spans) == (
        "invoke_workflow wf",
        (
            (
                "organizer_worker ow",
                (
                    ("task plan", ()),
                    ("task work[0]", ()),
                    ("task work[1]", ()),
                    ("task work[2]", ()),
                ),
            ),
        ),
    )
    names = by_name(spans)
    ow = names["organizer_worker ow"]
    assert ow.attributes["lightspan.organizer.items"] == 3
    assert ow.attributes["lightspan.organizer.concurrency"] == 2
    w1 = names["task work[1]"]
    assert w1.attributes["lightspan.worker.index"] == 1
    assert w1.attributes["lightspan.step.name"] == "work"
    assert w1.parent.span_id == ow.context.span_id


async def test_error_is_recorded_where_raised_and_error_status_goes_up_the_chain(traced: Traced):
    def boom(x):
        raise ValueError("bad input")

    wf = Workflow("wf", sequence("s", task("ok", ident), fork("f", [task("boom", boom)])))
    r = await wf.run(1)
    assert r.status == "failed"
    spans = by_name(traced.spans())
    for name in ("task boom", "fork f", "sequence s", "invoke_workflow wf"):
        s = spans[name]
        assert s.status.status_code is StatusCode.ERROR, name
        assert s.status.description == "ValueError: bad input"
    exc_events = {n: [e for e in s.events if e.name == "exception"] for n, s in spans.items()}
    assert len(exc_events["task boom"]) == 1
    assert exc_events["task boom"][0].attributes["exception.type"] == "ValueError"
    assert all(not v for n, v in exc_events.items() if n != "task boom")
    assert spans["task ok"].status.status_code is StatusCode.UNSET
    assert spans["invoke_workflow wf"].attributes["lightspan.run.status"] == "error"


async def test_a_failure_that_the_join_absorbs_stops_at_the_branch(traced: Traced):
    async def boom(x):
        raise RuntimeError("one branch down")

    async def later(x):
        await asyncio.sleep(0.05)
        return x

    wf = Workflow(
        "wf",
        fork(
            "f", [task("a", later), task("b", boom), task("c", later)], join=2, on_error="collect"
        ),
    )
    assert (await wf.run(1)).ok
    spans = by_name(traced.spans())
    assert spans["task b"].status.status_code is StatusCode.ERROR
    assert spans["task b"].attributes["lightspan.branch.name"] == "b"
    assert spans["fork f"].status.status_code is StatusCode.UNSET
    assert spans["fork f"].attributes["lightspan.join.failed"] == ("b",)
    assert spans["invoke_workflow wf"].status.status_code is StatusCode.UNSET


async def test_retries_are_events_and_a_timeout_is_an_error_of_the_step(traced: Traced):
    calls = {"n": 0}

    async def flaky(x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("transient")
        return x

    async def hang(x):
        await asyncio.sleep(10)

    wf = Workflow(
        "wf",
        sequence(
            "s",
            task("flaky", flaky, retry=3),
            task("hang", hang, timeout=0.05),
        ),
    )
    r = await wf.run(1)
    assert r.status == "failed"
    spans = by_name(traced.spans())
    flaky_span = spans["task flaky"]
    (retry,) = [e for e in flaky_span.events if e.name == "lightspan.step.retry"]
    assert retry.attributes["exception.type"] == "ConnectionError"
    assert retry.attributes["lightspan.step.attempt"] == 1
    assert flaky_span.attributes["lightspan.step.attempts"] == 2
    assert flaky_span.status.status_code is StatusCode.UNSET
    hang_span = spans["task hang"]
    assert hang_span.status.status_code is StatusCode.ERROR
    assert "StepTimeout" in hang_span.status.description
    assert [e.name for e in hang_span.events] == ["exception"]


async def test_reward_is_an_annotation_span_under_the_root(traced: Traced):
    wf = Workflow("wf", task("t", ident), evaluator=lambda i, o, e: 0.75)
    r = await wf.run(1)
    assert r.reward == 0.75
    spans = traced.spans()
    assert shape(spans) == (
        "invoke_workflow wf",
        (("agentlightning.annotation", ()), ("task t", ())),
    )
    ann = by_name(spans)["agentlightning.annotation"]
    assert ann.attributes["agentlightning.reward.0.name"] == "primary"
    assert ann.attributes["agentlightning.reward.0.value"] == 0.75
    assert ann.attributes["agentlightning.rollout_id"] == r.rollout_id
    root = by_name(spans)["invoke_workflow wf"]
    assert ann.end_time <= root.end_time


async def test_no_reward_no_annotation_span(traced: Traced):
    await Workflow("wf", task("t", ident)).run(1)
    assert "agentlightning.annotation" not in {s.name for s in traced.spans()}


async def test_runner_rollout_keeps_its_ids_and_is_marked_for_keeping(traced: Traced):
    wf = Workflow("wf", task("t", ident))
    r = await wf.run(1, rollout_id="ro-abcdefabcdef", attempt_id="at-12345678", mode="train")
    assert (r.rollout_id, r.attempt_id) == ("ro-abcdefabcdef", "at-12345678")
    spans = traced.spans()
    for s in spans:
        assert s.attributes["agentlightning.rollout_id"] == "ro-abcdefabcdef"
        assert s.attributes["agentlightning.attempt_id"] == "at-12345678"
    root = by_name(spans)["invoke_workflow wf"]
    assert root.attributes[KEEP_ATTRIBUTE] is True
    assert root.attributes["lightspan.rollout.origin"] == "runner"
    assert root.attributes["lightspan.rollout.mode"] == "train"


async def test_cancelled_run_is_marked_cancelled(traced: Traced):
    async def slow(x):
        await asyncio.sleep(10)

    wf = Workflow("wf", sequence("s", task("slow", slow)))
    t = asyncio.create_task(wf.run(1))
    await asyncio.sleep(0.05)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    spans = by_name(traced.spans())
    for name in ("task slow", "sequence s", "invoke_workflow wf"):
        assert spans[name].attributes["lightspan.cancelled"] is True, name
        assert spans[name].status.status_code is StatusCode.UNSET, name
    assert spans["invoke_workflow wf"].attributes["lightspan.run.status"] == "cancelled"


# -- LLM calls -------------------------------------------------------------------------------


def llm_resources(base_url: str) -> ResourceSet:
    return ResourceSet(
        "rs-test0001",
        {
            "ask": PromptTemplate("Q: {input}"),
            "sys": PromptTemplate("Be brief."),
            "default": LLMResource(
                base_url, "small-model", sampling_parameters={"max_tokens": 32, "temperature": 0.5}
            ),
        },
    )


PRICES = PriceTable({"small-model": {"input": 1.0, "output": 2.0}})


def llm_workflow(base_url: str) -> Workflow:
    return Workflow(
        "qa",
        llm_task("answer", prompt="ask", system="sys"),
        resources=llm_resources(base_url),
        prices=PRICES,
    )


async def test_llm_call_span_follows_genai_conventions_without_content(traced: Traced, fake_llm):
    wf = llm_workflow(fake_llm.base_url)
    r = await wf.run("two plus two?")
    await wf.aclose()
    assert r.ok, r.error
    spans = traced.spans()
    assert shape(spans) == (
        "invoke_workflow qa",
        (("llm answer", (("openai.chat.completion", ()),)),),
    )
    call = by_name(spans)["openai.chat.completion"]
    a = call.attributes
    assert call.kind is SpanKind.CLIENT
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "small-model"
    assert a["gen_ai.request.max_tokens"] == 32
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.response.model"] == "small-model"
    assert a["gen_ai.response.id"] == r.llm_calls[0].response_id
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == r.llm_calls[0].input_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == r.llm_calls[0].output_tokens > 0
    assert a["lightspan.llm.cost"] == pytest.approx(r.cost) and r.cost > 0
    assert a["lightspan.llm.priced"] is True
    assert a["lightspan.resources_id"] == "rs-test0001"
    assert a["lightspan.llm.prompt_template"] == "ask"
    assert a["server.address"] == "127.0.0.1"
    assert a["agentlightning.rollout_id"] == r.rollout_id
    # Content capture is off by default: no prompt or completion anywhere.
    for s in spans:
        assert not any(k.startswith(("gen_ai.prompt.", "gen_ai.completion.")) for k in s.attributes)
    root = by_name(spans)["invoke_workflow qa"]
    assert root.attributes["lightspan.resources_id"] == "rs-test0001"


def _assert_content(call_attrs) -> None:
    assert call_attrs["gen_ai.prompt.0.role"] == "system"
    assert call_attrs["gen_ai.prompt.0.content"] == "Be brief."
    assert call_attrs["gen_ai.prompt.1.role"] == "user"
    assert call_attrs["gen_ai.prompt.1.content"] == "Q: two plus two?"
    assert call_attrs["gen_ai.completion.0.role"] == "assistant"
    assert call_attrs["gen_ai.completion.0.content"] == "echo: Q: two plus two?"
    assert call_attrs["gen_ai.completion.0.finish_reason"] == "stop"


async def test_content_capture_flattens_prompt_and_completion(fake_llm):
    t = start_tracing(make_config(capture_content=True))
    try:
        wf = llm_workflow(fake_llm.base_url)
        assert (await wf.run("two plus two?")).ok
        await wf.aclose()
        _assert_content(by_name(t.spans())["openai.chat.completion"].attributes)
    finally:
        t.handle.shutdown()


async def test_runner_rollouts_capture_content_even_when_capture_is_off(traced: Traced, fake_llm):
    wf = llm_workflow(fake_llm.base_url)
    assert (await wf.run("two plus two?", rollout_id="ro-000000000001", mode="val")).ok
    await wf.aclose()
    _assert_content(by_name(traced.spans())["openai.chat.completion"].attributes)


async def test_failed_llm_call_is_recorded_on_the_call_span(traced: Traced, fake_llm):
    fake_llm.fail_next = 10  # more than the client's retries
    wf = llm_workflow(fake_llm.base_url)
    r = await wf.run("q")
    await wf.aclose()
    assert r.status == "failed"
    spans = by_name(traced.spans())
    call = spans["openai.chat.completion"]
    assert call.status.status_code is StatusCode.ERROR
    (exc,) = call.events
    assert exc.attributes["exception.type"].endswith("LLMCallError")
    for name in ("llm answer", "invoke_workflow qa"):
        assert spans[name].status.status_code is StatusCode.ERROR
        assert not spans[name].events


async def test_chat_from_a_task_nests_under_the_users_own_span(traced: Traced, fake_llm):
    async def agent(x, ctx):
        with traced.tracer.start_as_current_span("my-agent-step"):
            return await ctx.chat(f"say {x}")

    wf = Workflow("wf", task("agent", agent), resources=llm_resources(fake_llm.base_url))
    assert (await wf.run("hi")).ok
    await wf.aclose()
    assert shape(traced.spans()) == (
        "invoke_workflow wf",
        (("task agent", (("my-agent-step", (("openai.chat.completion", ()),)),)),),
    )
