"""The listener interface: which events come, in which order, with which facts."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from lightspan.engine import (
    BaseListener,
    RetryPolicy,
    Workflow,
    add_listener,
    fork,
    organizer_worker,
    remove_listener,
    sequence,
    task,
)


class Recorder(BaseListener):
    def __init__(self):
        self.events = []

    def on_run_start(self, run):
        self.events.append(("run_start", run.workflow))

    def on_run_end(self, run):
        self.events.append(("run_end", run.status, run.reward))

    def on_step_start(self, step):
        self.events.append(
            ("start", step.kind, step.name, step.parent.name if step.parent else None)
        )

    def on_step_retry(self, step, error, delay):
        self.events.append(("retry", step.name, type(error).__name__))

    def on_step_end(self, step):
        self.events.append(("end", step.kind, step.name, step.status, dict(step.attrs)))


def record(coro_factory):
    rec = Recorder()
    add_listener(rec)
    try:
        asyncio.run(coro_factory())
    finally:
        remove_listener(rec)
    return rec.events


def test_events_for_sequence_fork_and_workers_carry_parents_and_join_facts():
    async def slow(_):
        await asyncio.sleep(2)

    async def fast(x):
        return x

    w = Workflow(
        "wf",
        sequence(
            "main",
            fork("f", [task("fast", fast), task("slow", slow)], join="first"),
            organizer_worker("ow", task("plan", lambda x: [1, 2]), task("w", fast)),
        ),
        evaluator=lambda i, o, e: 0.5,
    )
    events = record(lambda: w.run(1))
    assert events[0] == ("run_start", "wf")
    assert events[-1] == ("run_end", "ok", 0.5)
    starts = [e for e in events if e[0] == "start"]
    assert ("start", "fork", "f", "main") in starts
    assert ("start", "branch", "fast", "f") in starts
    assert ("start", "task", "fast", "fast") in starts
    assert ("start", "task", "plan", "ow") in starts
    assert ("start", "worker", "w[0]", "ow") in starts
    assert ("start", "task", "w", "w[1]") in starts
    fork_end = next(e for e in events if e[:3] == ("end", "fork", "f"))
    assert fork_end[4]["join.policy"] == "first"
    assert fork_end[4]["join.winners"] == ["fast"]
    assert fork_end[4]["join.cancelled"] == ["slow"]
    slow_branch = next(e for e in events if e[:3] == ("end", "branch", "slow"))
    assert slow_branch[3] == "cancelled"


def test_retry_and_error_events():
    calls = []

    async def flaky(_):
        calls.append(1)
        raise ConnectionError("x")

    w = Workflow("wf", task("flaky", flaky, retry=RetryPolicy(max_attempts=2, backoff=0)))
    events = record(lambda: w.run(None))
    assert ("retry", "flaky", "ConnectionError") in events
    end = next(e for e in events if e[0] == "end")
    assert end[3] == "error"
    assert events[-1][:2] == ("run_end", "error")


def test_a_failing_listener_does_not_break_the_workflow(caplog):
    class Broken(BaseListener):
        def on_step_start(self, step):
            raise RuntimeError("listener bug")

    b = Broken()
    add_listener(b)
    try:
        r = Workflow("wf", task("t", lambda x: x + 1)).run_sync(1)
    finally:
        remove_listener(b)
    assert r.output == 2
    assert "listener bug" in caplog.text


def test_engine_imports_no_opentelemetry_and_no_openai_without_llm_calls():
    code = (
        "import sys, asyncio, lightspan, lightspan.engine as e\n"
        "w = e.Workflow('w', e.fork('f', [e.task('a', lambda x: x), e.task('b', lambda x: x)]))\n"
        "assert asyncio.run(w.run(1)).ok\n"
        "lightspan.configure()\n"
        "bad = [m for m in sys.modules if m.startswith(('opentelemetry', 'openai'))]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LIGHTSPAN_ENABLED": "false"},
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_listener_that_ignores_a_runs_steps_gets_none_and_the_others_all_of_them():
    from lightspan.engine.events import ignore_steps

    class Ignorer(Recorder):
        def on_run_start(self, run):
            super().on_run_start(run)
            ignore_steps(run, self)

    w = Workflow("wf", sequence("s", task("a", lambda x: x + 1), fork("f", [task("b", str)])))
    ignorer, rec = Ignorer(), Recorder()
    for listener in (ignorer, rec):
        add_listener(listener)
    try:
        assert w.run_sync(1).output == {"b": "2"}
    finally:
        for listener in (ignorer, rec):
            remove_listener(listener)
    assert [e[0] for e in ignorer.events] == ["run_start", "run_end"]
    starts = [e[1:3] for e in rec.events if e[0] == "start"]
    assert starts == [
        ("sequence", "s"),
        ("task", "a"),
        ("fork", "f"),
        ("branch", "b"),
        ("task", "b"),
    ]


def test_when_every_listener_ignores_the_steps_no_step_info_is_built():
    from lightspan.engine.events import ignore_steps

    class Ignorer(Recorder):
        def on_run_start(self, run):
            super().on_run_start(run)
            ignore_steps(run, self)

    seen = []

    def t(x, ctx):
        seen.append(ctx._info)  # the StepInfo the task's context reports to
        return x

    ignorer = Ignorer()
    add_listener(ignorer)
    try:
        r = Workflow("wf", sequence("s", task("t", t))).run_sync(1)
    finally:
        remove_listener(ignorer)
    assert r.ok and ignorer.events[-1] == ("run_end", "ok", None)
    assert [e[0] for e in ignorer.events] == ["run_start", "run_end"]
    assert seen == [None]
