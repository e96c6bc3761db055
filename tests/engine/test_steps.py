"""Engine semantics: ordering, join policies, reducers, timeouts, retries, cancellation,
concurrency limits, nesting."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lightspan.engine import (
    JoinFailed,
    RetryPolicy,
    StepFailed,
    StepTimeout,
    Workflow,
    WorkflowDefinitionError,
    fork,
    organizer_worker,
    sequence,
    task,
)


def wf(root, **kw) -> Workflow:
    return Workflow("test", root, **kw)


async def test_sequence_passes_outputs_in_order():
    order = []

    async def a(x):
        order.append("a")
        return x + 1

    def b(x):  # sync: runs in a thread
        order.append("b")
        return x * 10

    r = await wf(sequence("s", task("a", a), task("b", b))).run(1)
    assert r.ok and r.output == 20 and order == ["a", "b"]


async def test_sync_task_runs_in_a_thread_not_the_loop():
    loop_thread = threading.get_ident()
    r = await wf(task("t", lambda x: threading.get_ident())).run(None)
    assert r.output != loop_thread


async def test_fork_all_runs_branches_concurrently_and_default_reducer_is_a_dict():
    # All 5 branches must be running at once (a timing bound passed with 2 at a time).
    running = peak = 0
    all_in = asyncio.Event()

    async def slow(x):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 5:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 5)
        running -= 1
        return x

    branches = [task(f"b{i}", slow) for i in range(5)]
    r = await wf(fork("f", branches)).run(7)
    assert peak == 5
    assert r.output == {f"b{i}": 7 for i in range(5)}


async def test_fork_reducer_combines_results_in_branch_order():
    async def v(n):
        async def f(_):
            await asyncio.sleep(0.01 * (3 - n))
            return n

        return f

    branches = [task(f"b{n}", await v(n)) for n in range(3)]
    r = await wf(fork("f", branches, reducer=lambda d: list(d.items()))).run(None)
    assert r.output == [("b0", 0), ("b1", 1), ("b2", 2)]


async def test_fork_first_returns_first_success_and_cancels_the_others():
    cancelled = []

    async def fast(_):
        await asyncio.sleep(0.01)
        return "fast"

    async def failing(_):
        raise ValueError("boom")

    async def slow(_):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return "slow"

    r = await wf(
        fork("f", [task("bad", failing), task("slow", slow), task("fast", fast)], join="first")
    ).run(None)
    assert r.ok, r.error
    assert r.output == "fast"
    assert cancelled == ["slow"]


async def test_fork_quorum_waits_for_k_successes():
    async def delay(d):
        async def f(_):
            await asyncio.sleep(d)
            return d

        return f

    branches = [task(f"b{i}", await delay(d)) for i, d in enumerate([0.01, 3.0, 0.02, 0.03])]
    t0 = time.perf_counter()
    r = await wf(fork("f", branches, join=2)).run(None)
    assert time.perf_counter() - t0 < 1.5
    assert r.output == {"b0": 0.01, "b2": 0.02}


async def test_fork_fail_fast_cancels_siblings_and_raises_the_error():
    cancelled = asyncio.Event()

    async def boom(_):
        await asyncio.sleep(0.01)
        raise KeyError("bad")

    async def slow(_):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    t0 = time.perf_counter()
    r = await wf(fork("f", [task("boom", boom), task("slow", slow)])).run(None)
    assert time.perf_counter() - t0 < 1.0
    assert isinstance(r.error, KeyError)
    assert cancelled.is_set()
    assert r.status == "failed"


async def test_fork_collect_errors_runs_everything_and_reports_all_failures():
    done = []

    async def boom(_):
        raise RuntimeError("one")

    async def boom2(_):
        await asyncio.sleep(0.02)
        raise RuntimeError("two")

    async def ok(_):
        await asyncio.sleep(0.05)
        done.append("ok")
        return 1

    r = await wf(
        fork("f", [task("a", boom), task("b", boom2), task("c", ok)], on_error="collect")
    ).run(None)
    assert isinstance(r.error, JoinFailed)
    assert set(r.error.errors) == {"a", "b"} and r.error.results == {"c": 1}
    assert done == ["ok"]


async def test_fork_quorum_unsatisfiable_fails_fast():
    async def boom(_):
        raise RuntimeError("x")

    async def slow(_):
        await asyncio.sleep(5)

    t0 = time.perf_counter()
    r = await wf(fork("f", [task("a", boom), task("b", boom), task("c", slow)], join=2)).run(None)
    assert time.perf_counter() - t0 < 1.0
    assert isinstance(r.error, JoinFailed)


async def test_timeout_per_step():
    async def slow(_):
        await asyncio.sleep(5)

    r = await wf(task("slow", slow, timeout=0.05)).run(None)
    assert isinstance(r.error, StepTimeout)
    assert "slow" in str(r.error)


async def test_retries_with_backoff_then_success():
    calls = []

    async def flaky(x):
        calls.append(time.perf_counter())
        if len(calls) < 3:
            raise ConnectionError("transient")
        return x

    policy = RetryPolicy(max_attempts=3, backoff=0.05, multiplier=2, jitter=0)
    r = await wf(task("flaky", flaky, retry=policy)).run("ok")
    assert r.output == "ok" and len(calls) == 3
    assert calls[1] - calls[0] >= 0.045 and calls[2] - calls[1] >= 0.095


async def test_retries_exhausted_names_step_and_attempts():
    async def bad(_):
        raise ConnectionError("down")

    r = await wf(task("bad", bad, retry=RetryPolicy(max_attempts=2, backoff=0.0))).run(None)
    assert isinstance(r.error, StepFailed)
    assert r.error.attempts == 2 and "bad" in str(r.error)
    assert isinstance(r.error.__cause__, ConnectionError)


async def test_retry_on_limits_which_errors_are_retried():
    calls = []

    async def bad(_):
        calls.append(1)
        raise ValueError("not transient")

    policy = RetryPolicy(max_attempts=3, backoff=0.0, retry_on=(ConnectionError,))
    r = await wf(task("bad", bad, retry=policy)).run(None)
    assert isinstance(r.error, ValueError) and len(calls) == 1


async def test_timeout_is_retried_per_attempt():
    calls = []

    async def slow_then_fast(_):
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(5)
        return "done"

    r = await wf(
        task("s", slow_then_fast, timeout=0.05, retry=RetryPolicy(max_attempts=2, backoff=0))
    ).run(None)
    assert r.output == "done" and len(calls) == 2


async def test_cancelling_a_run_cancels_every_child_and_leaves_no_task(recwarn):
    started = asyncio.Event()
    cancelled = []

    async def child(_):
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    root = fork(
        "outer",
        [
            fork("inner", [task("a", child), task("b", child)]),
            organizer_worker("ow", task("plan", lambda _: [1, 2, 3]), task("w", child)),
        ],
    )
    run = asyncio.create_task(wf(root).run(None))
    await started.wait()
    await asyncio.sleep(0.05)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert len(cancelled) == 5  # a, b and the 3 workers
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == []


async def test_organizer_worker_respects_concurrency_limit_and_keeps_order():
    running = 0
    peak = 0

    async def work(x):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return x * x

    step = organizer_worker(
        "ow", task("plan", lambda n: list(range(n))), task("sq", work), concurrency=3
    )
    r = await wf(step).run(10)
    assert r.output == [i * i for i in range(10)]
    assert peak == 3


async def test_organizer_worker_reducer_and_fail_fast():
    async def work(x):
        if x == 2:
            raise ValueError("item 2")
        await asyncio.sleep(0.01)
        return x

    ok = organizer_worker(
        "ow", task("plan", lambda n: range(n)), task("w", lambda x: x), reducer=sum
    )
    assert (await wf(ok).run(5)).output == 10
    bad = organizer_worker("ow", task("plan", lambda n: range(n)), task("w", work))
    r = await wf(bad).run(5)
    assert isinstance(r.error, ValueError)


async def test_organizer_must_return_an_iterable():
    step = organizer_worker("ow", task("plan", lambda n: 3), task("w", lambda x: x))
    r = await wf(step).run(None)
    assert isinstance(r.error, WorkflowDefinitionError) and "plan" in str(r.error)


async def test_nesting_of_every_kind():
    async def inc(x):
        return x + 1

    inner = sequence("inner", task("i1", inc), task("i2", inc))
    root = sequence(
        "root",
        fork(
            "f",
            {
                "seq": inner,
                "ow": organizer_worker(
                    "ow", task("plan", lambda x: [x, x]), fork("wf", [task("w", inc)]), reducer=len
                ),
            },
        ),
        task("merge", lambda d: d["seq"] + d["ow"]),
    )
    r = await wf(root).run(1)
    assert r.ok, r.error
    assert r.output == 3 + 2


async def test_task_gets_context_when_it_asks_for_it():
    async def t(x, ctx):
        return (ctx.run_id, ctx.input, ctx.step.name)

    r = await wf(task("t", t)).run("in")
    assert r.output == (r.run_id, "in", "t")


async def test_evaluator_reward_and_failed_run_reward_zero():
    async def ev(inp, out, exp):
        return 1.0 if out == exp else 0.0

    w = wf(task("t", lambda x: x * 2), evaluator=ev)
    assert (await w.run(2, expected=4)).reward == 1.0
    assert (await w.run(2, expected=5)).reward == 0.0

    async def boom(_):
        raise RuntimeError

    assert (await wf(task("t", boom), evaluator=ev).run(1, expected=1)).reward == 0.0


async def test_evaluator_failure_fails_the_run_with_a_clear_error():
    def ev(i, o, e):
        raise ZeroDivisionError

    r = await wf(task("t", lambda x: x), evaluator=ev).run(1)
    assert r.status == "failed" and "evaluator" in str(r.error)


def test_definition_errors_name_the_step():
    with pytest.raises(WorkflowDefinitionError, match="'f'.*two child steps.*'a'"):
        fork("f", [task("a", lambda x: x), task("a", lambda x: x)])
    with pytest.raises(WorkflowDefinitionError, match="'f'.*quorum"):
        fork("f", [task("a", lambda x: x)], join=2)
    with pytest.raises(WorkflowDefinitionError, match="'t'.*timeout"):
        task("t", lambda x: x, timeout=0)
    with pytest.raises(WorkflowDefinitionError, match="not callable"):
        task("t", 3)


def test_run_sync():
    assert wf(task("t", lambda x: x + 1)).run_sync(1).output == 2


async def test_concurrent_runs_of_one_workflow_are_independent():
    async def t(x):
        await asyncio.sleep(0.01)
        return x

    w = wf(fork("f", [task("a", t), task("b", t)]))
    results = await asyncio.gather(*(w.run(i) for i in range(50)))
    assert [r.output for r in results] == [{"a": i, "b": i} for i in range(50)]
