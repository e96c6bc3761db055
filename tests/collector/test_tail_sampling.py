"""production.yaml's tail sampling, with the real Collector and Jaeger.

Sends traces of every kind the policy must keep (errors, slow traces, traces flagged
``lightspan.sampling.keep = true``, trainer rollouts by ``lightspan.rollout.mode``) and many
ordinary ones. Every must-keep trace must arrive whole; the share of ordinary traces kept must be
within binomial bounds of the configured percentage (a policy that kept everything, or nothing,
fails). Both fan-out targets (Jaeger and the store side) must see the same traces.
"""

from __future__ import annotations

import math
import time
import uuid

from opentelemetry.trace import Status, StatusCode, set_span_in_context

from tests.collector.otel_send import otlp_tracer_provider, sent_span
from tests.fixtures.collector import CollectorFactory, Jaeger, OtlpSink

SAMPLE_PERCENT = 30
N_ORDINARY = 120
N_ERRORS = 20
N_EACH_OTHER_KEEP = 8
DECISION_WAIT_S = 1


def binomial_bounds(n: int, p: float, tail: float = 1e-6) -> tuple[int, int]:
    """[lo, hi] such that a Binomial(n, p) count falls outside with probability < 2*tail."""
    pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    lo, below = 0, 0.0
    while below + pmf[lo] < tail:
        below += pmf[lo]
        lo += 1
    hi, above = n, 0.0
    while above + pmf[hi] < tail:
        above += pmf[hi]
        hi -= 1
    return lo, hi


def test_binomial_bounds_are_sane() -> None:
    lo, hi = binomial_bounds(N_ORDINARY, SAMPLE_PERCENT / 100)
    assert 0 < lo < N_ORDINARY * SAMPLE_PERCENT / 100 < hi < N_ORDINARY


def _two_span_trace(tracer, kind: str, i: int) -> None:
    """Root + child; ``kind`` decides what makes (or must not make) the trace kept."""
    attrs: dict = {"test.kind": kind, "test.index": i}
    if kind == "flagged":
        attrs["lightspan.sampling.keep"] = True
    elif kind == "train":
        attrs["lightspan.rollout.mode"] = "train" if i % 2 else "val"
    elif kind == "ordinary":
        # Look-alikes that must NOT force a keep.
        attrs["lightspan.sampling.keep"] = False
        attrs["lightspan.rollout.mode"] = "serve"
    now = time.time_ns()
    start = now - 3_000_000_000 if kind == "slow" else None
    root = tracer.start_span("workflow", attributes=attrs, start_time=start)
    child = tracer.start_span(
        "task",
        context=set_span_in_context(root),
        start_time=start,
    )
    if kind == "error":
        child.set_status(Status(StatusCode.ERROR, "task failed"))
    child.end()
    root.end(end_time=now if kind == "slow" else None)


def test_production_tail_sampling_keeps_what_it_must_and_a_share_of_the_rest(
    jaeger: Jaeger, collector_factory: CollectorFactory, otlp_sink: OtlpSink
) -> None:
    collector = collector_factory(
        "production",
        {
            "LIGHTSPAN_JAEGER_OTLP_GRPC": jaeger.otlp_grpc,
            "LIGHTSPAN_STORE_OTLP_GRPC": otlp_sink.endpoint,
            "LIGHTSPAN_TAIL_DECISION_WAIT": f"{DECISION_WAIT_S}s",
            "LIGHTSPAN_TAIL_SAMPLE_PERCENT": str(SAMPLE_PERCENT),
            "LIGHTSPAN_TAIL_SLOW_MS": "2000",
        },
    )
    service = f"lightspan-test-tail-{uuid.uuid4().hex[:8]}"
    plan = (
        [("error", N_ERRORS)]
        + [(k, N_EACH_OTHER_KEEP) for k in ("slow", "flagged", "train")]
        + [("ordinary", N_ORDINARY)]
    )
    with otlp_tracer_provider(collector.otlp_grpc, service) as (provider, memory):
        tracer = provider.get_tracer("lightspan.tests.tail")
        for kind, count in plan:
            for i in range(count):
                _two_span_trace(tracer, kind, i)

    kind_of: dict[str, str] = {}
    for span in memory.get_finished_spans():
        if span.name == "workflow":
            kind_of[sent_span(span).trace_id] = span.attributes["test.kind"]
    must_keep = {t for t, k in kind_of.items() if k != "ordinary"}
    ordinary = {t for t, k in kind_of.items() if k == "ordinary"}
    assert len(must_keep) == N_ERRORS + 3 * N_EACH_OTHER_KEEP and len(ordinary) == N_ORDINARY

    # Decisions come after decision_wait; wait for every must-keep trace, then for stragglers.
    deadline = time.monotonic() + 30
    while True:
        in_jaeger = {t["traceID"]: t for t in jaeger.find_traces(service)}
        if must_keep <= in_jaeger.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(DECISION_WAIT_S + 3)
    in_jaeger = {t["traceID"]: t for t in jaeger.find_traces(service)}

    missing = {kind_of[t] for t in must_keep - in_jaeger.keys()}
    assert not missing, f"tail sampling dropped must-keep traces of kinds {missing}"
    assert in_jaeger.keys() <= kind_of.keys()
    incomplete = [t for t, tr in in_jaeger.items() if len(tr["spans"]) != 2]
    assert not incomplete, "tail sampling kept part of a trace"

    kept_ordinary = len(ordinary & in_jaeger.keys())
    lo, hi = binomial_bounds(N_ORDINARY, SAMPLE_PERCENT / 100)
    assert lo <= kept_ordinary <= hi, (
        f"kept {kept_ordinary} of {N_ORDINARY} ordinary traces at {SAMPLE_PERCENT}%, "
        f"expected within [{lo}, {hi}]"
    )

    # The store side got exactly the traces Jaeger got, whole.
    stored = otlp_sink.wait_for_spans(
        lambda s: s.service == service, 2 * len(in_jaeger), timeout=10
    )
    assert {s.trace_id for s in stored} == in_jaeger.keys()
    assert len(stored) == 2 * len(in_jaeger)
