"""Whole-trace head sampling: ratio within binomial bounds, no partial traces, runner
rollouts always kept, OTEL_TRACES_SAMPLER honoured."""

from __future__ import annotations

import asyncio
import math

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lightspan.engine import Workflow, fork, sequence, task
from lightspan.instrumentation.sampling import (
    KEEP_ATTRIBUTE,
    RolloutAwareSampler,
    make_sampler,
    ratio_from_env,
    sampler_from_arg,
)
from tests.instrumentation.conftest import make_config, shape, start_tracing

SPANS_PER_RUN = 6  # root, sequence, task, fork, 2 branch tasks


async def ident(x):
    return x


def workflow() -> Workflow:
    def user_work(x):  # a sync task: its thread's spans must follow the trace's decision too
        return x

    return Workflow(
        "wf", sequence("s", task("a", ident), fork("f", [task("b", ident), task("c", user_work)]))
    )


async def run_many(wf: Workflow, n: int, concurrency: int = 50, **kw) -> list:
    results = []
    for start in range(0, n, concurrency):
        batch = await asyncio.gather(
            *(wf.run(i, **kw) for i in range(start, min(start + concurrency, n)))
        )
        results.extend(batch)
    return results


async def test_ratio_keeps_whole_traces_within_binomial_bounds():
    n, ratio = 3000, 0.25
    t = start_tracing(make_config(sampling_ratio=ratio))
    try:
        results = await run_many(workflow(), n)
        assert all(r.ok for r in results)
        traces = t.traces()
    finally:
        t.handle.shutdown()
    kept = len(traces)
    mean, sigma = n * ratio, math.sqrt(n * ratio * (1 - ratio))
    assert abs(kept - mean) <= 4 * sigma, (kept, mean, sigma)
    for spans in traces.values():  # no partial traces
        assert len(spans) == SPANS_PER_RUN
        shape(spans)
    assert t.handle.stats().dropped == 0


async def test_runner_rollouts_are_kept_even_at_ratio_zero():
    t = start_tracing(make_config(sampling_ratio=0.0))
    try:
        wf = workflow()
        await run_many(wf, 100)  # production runs: all sampled out
        assert t.spans() == []
        await run_many(wf, 40, mode="train")
        await run_many(wf, 40, rollout_id=None, mode="val")
        r = await wf.run(1, rollout_id="ro-00000000000a", attempt_id="at-0000000a")
        traces = t.traces()
    finally:
        t.handle.shutdown()
    assert len(traces) == 81
    assert all(len(s) == SPANS_PER_RUN for s in traces.values())
    roots = [s for spans in traces.values() for s in spans if s.parent is None]
    assert all(root.attributes[KEEP_ATTRIBUTE] is True for root in roots)
    assert r.rollout_id in {root.attributes["agentlightning.rollout_id"] for root in roots}


async def test_sampled_out_run_costs_no_step_spans_and_its_user_spans_are_dropped_too():
    t = start_tracing(make_config(sampling_ratio=0.0))
    tracer = t.tracer
    try:

        def user_code(x):
            with tracer.start_as_current_span("user") as s:
                assert not s.is_recording()
            return x

        r = await Workflow("wf", task("u", user_code)).run(1)
        assert r.ok and r.rollout_id is None  # not traced: no rollout
        assert t.spans() == []
    finally:
        t.handle.shutdown()


async def test_sampled_out_run_asks_for_no_step_events_other_listeners_still_get_them():
    from lightspan.engine import BaseListener, add_listener, remove_listener

    class Steps(BaseListener):
        def __init__(self) -> None:
            self.steps: list[str] = []

        def on_step_start(self, step) -> None:
            self.steps.append(step.name)

    t = start_tracing(make_config(sampling_ratio=0.0))
    other = Steps()
    try:
        add_listener(other)
        r = await workflow().run(1)  # sampled out: our listener wants no step events
        assert r.ok and t.spans() == []
        assert other.steps == ["s", "a", "f", "b", "b", "c", "c"]  # branches, then their tasks
        other.steps.clear()
        r = await workflow().run(1, mode="train")  # kept: every step traced as before
        assert r.ok and len(t.spans()) == SPANS_PER_RUN
        assert len(other.steps) == 7
    finally:
        remove_listener(other)
        t.handle.shutdown()


def test_sampler_children_follow_the_parent_and_marked_roots_are_kept():
    exporter = InMemorySpanExporter()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(sampler=make_sampler(0.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root", attributes={KEEP_ATTRIBUTE: True}):
        with tracer.start_as_current_span("child"):
            pass
    with tracer.start_as_current_span("plain-root"):
        with tracer.start_as_current_span("plain-child"):
            pass
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["child", "root"]
    assert "ratio=0.0" in RolloutAwareSampler(0.0).get_description()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 0.3),
        ({"OTEL_TRACES_SAMPLER": "always_on"}, 1.0),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, 0.0),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
            0.1,
        ),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}, 0.5),
        ({"OTEL_TRACES_SAMPLER": "traceidratio"}, 1.0),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"}, 0.3),
        ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, 0.3),
    ],
)
def test_otel_traces_sampler_overrides_the_configured_ratio(env, expected):
    assert ratio_from_env(0.3, env)[0] == expected


def test_configure_tracing_uses_the_env_sampler():
    t = start_tracing(make_config(sampling_ratio=1.0))
    t.handle.shutdown()
    from lightspan.instrumentation.setup import configure_tracing

    h = configure_tracing(
        make_config(sampling_ratio=1.0),
        exporters=[InMemorySpanExporter()],
        set_global=False,
        environ={
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.2",
        },
    )
    try:
        assert h.sampling_ratio == 0.2 and "OTEL_TRACES_SAMPLER" in h.sampling_source
    finally:
        h.shutdown()


def test_sampler_entry_point_factory():
    s = sampler_from_arg("0.25")
    assert "ratio=0.25" in s.get_description()
    assert "ratio=1.0" in sampler_from_arg("").get_description()
