"""The documented two-tier layout, for real: tier 1 (load_balancing, routing_key traceID) in
front of two tail-sampling tier-2 Collectors (production.yaml), each with its own store sink.

Each trace's spans are sent in two separate exports (children first, roots later), so only
trace-id routing can bring them together: every trace must arrive whole in exactly one tier-2
Collector's store, and both tier-2 Collectors must get some traces.
"""

from __future__ import annotations

import time
import uuid

from opentelemetry.trace import set_span_in_context

from tests.collector.otel_send import otlp_tracer_provider, sent_span
from tests.fixtures.collector import CollectorFactory, Jaeger, running_otlp_sink

N_TRACES = 24


def test_tier1_routes_every_trace_whole_to_one_tier2_collector(
    jaeger: Jaeger, collector_factory: CollectorFactory
) -> None:
    with running_otlp_sink() as sink_a, running_otlp_sink() as sink_b:
        tier2 = [
            collector_factory(
                "production",
                {
                    "LIGHTSPAN_STORE_OTLP_GRPC": sink.endpoint,
                    "LIGHTSPAN_JAEGER_OTLP_GRPC": jaeger.otlp_grpc,
                    "LIGHTSPAN_TAIL_DECISION_WAIT": "1s",
                    "LIGHTSPAN_TAIL_SAMPLE_PERCENT": "100",
                },
            )
            for sink in (sink_a, sink_b)
        ]
        tier1 = collector_factory(
            "production-tier1-loadbalancer",
            {"LIGHTSPAN_TIER2_A": tier2[0].otlp_grpc, "LIGHTSPAN_TIER2_B": tier2[1].otlp_grpc},
        )
        service = f"lightspan-test-tiers-{uuid.uuid4().hex[:8]}"
        with otlp_tracer_provider(tier1.otlp_grpc, service) as (provider, memory):
            tracer = provider.get_tracer("lightspan.tests.tiers")
            roots = [tracer.start_span("workflow") for _ in range(N_TRACES)]
            for root in roots:
                for name in ("task.a", "task.b"):
                    tracer.start_span(name, context=set_span_in_context(root)).end()
            assert provider.force_flush(10_000)  # children leave in their own exports...
            for root in roots:
                root.end()  # ...and the roots in later ones
        sent = [sent_span(s) for s in memory.get_finished_spans()]
        trace_ids = {s.trace_id for s in sent}
        assert len(trace_ids) == N_TRACES and len(sent) == 3 * N_TRACES

        # Both sinks together must receive every span (after decision_wait and batching).
        deadline = time.monotonic() + 20
        while True:
            got_a = [s for s in sink_a.spans() if s.service == service]
            got_b = [s for s in sink_b.spans() if s.service == service]
            if len(got_a) + len(got_b) >= len(sent) or time.monotonic() > deadline:
                break
            time.sleep(0.2)

    traces_a = {s.trace_id for s in got_a}
    traces_b = {s.trace_id for s in got_b}
    assert not traces_a & traces_b, "a trace was split across tier-2 Collectors"
    assert traces_a | traces_b == trace_ids
    assert traces_a and traces_b, "all traces went to one tier-2 Collector"
    assert sorted(s.span_id for s in got_a + got_b) == sorted(s.span_id for s in sent)
