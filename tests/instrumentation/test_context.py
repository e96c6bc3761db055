"""Parent/child links across asyncio tasks (gather, TaskGroup, the engine's fan-out) and
threads (sync tasks), and context hygiene around a run."""

from __future__ import annotations

import asyncio
import threading

from opentelemetry import trace

from lightspan.engine import Workflow, fork, organizer_worker, sequence, task
from tests.instrumentation.conftest import Traced, by_name, shape


async def test_sync_task_in_a_thread_nests_its_own_spans_under_the_step(traced: Traced):
    loop_thread = threading.get_ident()

    def sync_work(x):
        assert threading.get_ident() != loop_thread
        with traced.tracer.start_as_current_span("inside-thread"):
            with traced.tracer.start_as_current_span("deeper"):
                return x

    wf = Workflow("wf", sequence("s", task("sync", sync_work)))
    assert (await wf.run(1)).ok
    assert shape(traced.spans()) == (
        "invoke_workflow wf",
        (("sequence s", (("task sync", (("inside-thread", (("deeper", ()),)),)),)),),
    )


async def test_gather_and_taskgroup_children_nest_under_the_step(traced: Traced):
    async def child(name: str) -> None:
        await asyncio.sleep(0.001)
        with traced.tracer.start_as_current_span(name):
            await asyncio.sleep(0.001)

    async def fan_out(x):
        await asyncio.gather(child("g1"), child("g2"))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(child("t1"))
            tg.create_task(child("t2"))
        await asyncio.to_thread(lambda: traced.tracer.start_span("in-to-thread").end())
        return x

    wf = Workflow("wf", task("fan", fan_out))
    assert (await wf.run(1)).ok
    assert shape(traced.spans()) == (
        "invoke_workflow wf",
        (
            (
                "task fan",
                (("g1", ()), ("g2", ()), ("in-to-thread", ()), ("t1", ()), ("t2", ())),
            ),
        ),
    )


async def test_concurrent_runs_never_mix_their_spans(traced: Traced):
    async def work(x):
        await asyncio.sleep(0.001 * (x % 3))
        with traced.tracer.start_as_current_span("user"):
            await asyncio.sleep(0)
        return x

    wf = Workflow(
        "wf",
        sequence(
            "s",
            fork("f", [task("a", work), task("b", lambda x: x)]),
            organizer_worker("ow", task("plan", lambda d: [1, 2, 3]), task("w", work)),
        ),
    )
    results = await asyncio.gather(*(wf.run(i) for i in range(30)))
    assert all(r.ok for r in results)
    traces = traced.traces()
    assert len(traces) == 30
    by_rollout = {r.rollout_id for r in results}
    for spans in traces.values():
        # root, sequence, fork, 2 branch tasks, 1 user, ow, plan, 3 worker tasks, 3 users
        assert len(spans) == 14
        shape(spans)  # one root, every parent inside the trace
        ids = {s.attributes["agentlightning.rollout_id"] for s in spans}
        assert len(ids) == 1 and ids <= by_rollout


async def test_run_inside_a_user_span_starts_its_own_trace_linked_to_it(traced: Traced):
    wf = Workflow("wf", task("t", lambda x: x))
    with traced.tracer.start_as_current_span("http-request") as outer:
        assert (await wf.run(1)).ok
        # the run detached its context: the caller's span is current again
        assert trace.get_current_span() is outer
    spans = by_name(traced.spans())
    root = spans["invoke_workflow wf"]
    assert root.parent is None
    assert root.context.trace_id != outer.get_span_context().trace_id
    assert [link.context.span_id for link in root.links] == [outer.get_span_context().span_id]


async def test_no_context_leaks_after_runs_fail_or_are_cancelled(traced: Traced):
    async def slow(x):
        await asyncio.sleep(5)

    def boom(x):
        raise ValueError("x")

    before = trace.get_current_span()
    await Workflow("wf", sequence("s", task("b", boom))).run(1)
    t = asyncio.create_task(Workflow("wf2", fork("f", [task("s", slow)])).run(1))
    await asyncio.sleep(0.02)
    t.cancel()
    await asyncio.gather(t, return_exceptions=True)
    assert trace.get_current_span() is before
