"""The dev pipeline for real: Python SDK -> our Collector (dev.yaml) -> Jaeger and a store.

The store is stood in for by an OTLP/gRPC sink (the store server is another stage); the test
reads the trace back from Jaeger's query API and checks every span and every parent, and that
the store side received the very same spans (the Collector fans out to both).
"""

from __future__ import annotations

import uuid

from opentelemetry.trace import Status, StatusCode

from tests.collector.otel_send import SentSpan, otlp_tracer_provider, sent_span
from tests.fixtures.collector import Collector, CollectorFactory, Jaeger, OtlpSink


def _start_dev(collector_factory: CollectorFactory, jaeger: Jaeger, sink: OtlpSink) -> Collector:
    return collector_factory(
        "dev",
        {
            "LIGHTSPAN_JAEGER_OTLP_GRPC": jaeger.otlp_grpc,
            "LIGHTSPAN_STORE_OTLP_GRPC": sink.endpoint,
        },
    )


def _fork_join_trace(provider, rollout_id: str) -> None:
    """A workflow-shaped trace: root, two forked branches with an LLM call each, a join."""
    tracer = provider.get_tracer("lightspan.tests.collector")
    with tracer.start_as_current_span(
        "workflow", attributes={"agentlightning.rollout_id": rollout_id}
    ):
        for branch in ("a", "b"):
            with tracer.start_as_current_span(f"branch.{branch}"):
                with tracer.start_as_current_span(
                    "llm.call", attributes={"gen_ai.usage.input_tokens": 12}
                ):
                    pass
        with tracer.start_as_current_span("join") as join:
            join.set_status(Status(StatusCode.OK))


def _jaeger_shape(trace: dict) -> dict[str, tuple[str, str]]:
    """span_id -> (parent span_id or "", operation name) from Jaeger's JSON."""
    shape = {}
    for span in trace["spans"]:
        parents = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        assert len(parents) <= 1, span
        shape[span["spanID"]] = (parents[0] if parents else "", span["operationName"])
    return shape


def _sent_shape(spans: list[SentSpan]) -> dict[str, tuple[str, str]]:
    return {s.span_id: (s.parent_span_id, s.name) for s in spans}


def test_dev_pipeline_delivers_every_span_with_its_parent_to_jaeger_and_store(
    jaeger: Jaeger, collector_factory: CollectorFactory, otlp_sink: OtlpSink
) -> None:
    collector = _start_dev(collector_factory, jaeger, otlp_sink)
    service = f"lightspan-test-dev-{uuid.uuid4().hex[:8]}"

    with otlp_tracer_provider(collector.otlp_grpc, service) as (provider, memory):
        _fork_join_trace(provider, rollout_id="ro-dev-1")
    sent = [sent_span(s) for s in memory.get_finished_spans()]
    assert len(sent) == 6
    (trace_id,) = {s.trace_id for s in sent}

    trace = jaeger.wait_for_trace(trace_id, len(sent))
    assert _jaeger_shape(trace) == _sent_shape(sent)
    roots = [s for s in trace["spans"] if not s.get("references")]
    assert [r["operationName"] for r in roots] == ["workflow"]
    assert trace["processes"][roots[0]["processID"]]["serviceName"] == service
    root_tags = {t["key"]: t["value"] for t in roots[0]["tags"]}
    assert root_tags["agentlightning.rollout_id"] == "ro-dev-1"

    stored = otlp_sink.wait_for_spans(lambda s: s.trace_id == trace_id, len(sent))
    assert {s.span_id: (s.parent_span_id, s.name) for s in stored} == _sent_shape(sent)
    assert len(stored) == len(sent), "the store side received a span twice"
    assert {s.service for s in stored} == {service}


def test_dev_pipeline_takes_otlp_http_too(
    jaeger: Jaeger, collector_factory: CollectorFactory, otlp_sink: OtlpSink
) -> None:
    collector = _start_dev(collector_factory, jaeger, otlp_sink)
    service = f"lightspan-test-dev-http-{uuid.uuid4().hex[:8]}"

    with otlp_tracer_provider(collector.otlp_http, service, protocol="http") as (provider, memory):
        _fork_join_trace(provider, rollout_id="ro-dev-http")
    sent = [sent_span(s) for s in memory.get_finished_spans()]
    (trace_id,) = {s.trace_id for s in sent}

    assert _jaeger_shape(jaeger.wait_for_trace(trace_id, len(sent))) == _sent_shape(sent)
    assert len(otlp_sink.wait_for_spans(lambda s: s.trace_id == trace_id, len(sent))) == len(sent)
