"""configure_tracing: exporters from the configuration and OTEL_* variables, the resource,
the handle."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lightspan.config import ConfigError, parse_config
from lightspan.exporter import LightningStoreSpanExporter, exporter_from_config
from lightspan.instrumentation.processor import NonBlockingBatchProcessor
from lightspan.instrumentation.setup import (
    build_exporters,
    build_resource,
    configure_tracing,
)


def cfg(**al):
    return parse_config({"agentLightning": {"enabled": True, **al}}, environ={})


def test_collector_endpoint_in_configuration_goes_through_the_store_exporter(tmp_path):
    spool = {"path": str(tmp_path / "spool")}
    (g,) = build_exporters(cfg(exporter={"endpoint": "localhost:4317", "spool": spool}), environ={})
    (h,) = build_exporters(
        cfg(
            exporter={
                "endpoint": "http://collector:4318",
                "protocol": "http/protobuf",
                "spool": {"enabled": False},
            }
        ),
        environ={},
    )
    try:
        assert isinstance(g, LightningStoreSpanExporter)
        assert (g.target.protocol, g.target.endpoint) == ("grpc", "localhost:4317")
        assert g.spool is not None and g.spool.path.parent == tmp_path / "spool"
        assert isinstance(h, LightningStoreSpanExporter)
        assert h.target.endpoint == "http://collector:4318/v1/traces"
        assert h.spool is None  # spool off: drop and count
        assert g.stats().sent == 0 and h.stats().dropped == 0
    finally:
        g.shutdown()
        h.shutdown()


def test_otel_exporter_variables_go_through_the_store_exporter(tmp_path):
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://otel:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-team=agents",
    }
    (e,) = build_exporters(cfg(exporter={"spool": {"path": str(tmp_path)}}), environ=env)
    try:
        assert isinstance(e, LightningStoreSpanExporter) and e.spool is not None
        assert e.target.endpoint == "http://otel:4318/v1/traces"
        assert e.target.headers == {"x-team": "agents"}
    finally:
        e.shutdown()


def test_in_memory_store_is_explicit_configuration_and_wins_over_otel_variables():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"}
    (e,) = build_exporters(cfg(store={"type": "in_memory"}), environ=env)
    try:
        assert isinstance(e, LightningStoreSpanExporter)
        assert e.store is not None and e.target is None
    finally:
        e.shutdown()


def test_configure_tracing_sends_to_the_store_exporter_the_configuration_asks_for():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http"}
    c = cfg(exporter={"spool": {"enabled": False}})
    h = configure_tracing(c, set_global=False, instrument=False, environ=env)
    try:
        (e,) = h.exporters
        assert isinstance(e, LightningStoreSpanExporter)
        assert e.target.endpoint == "http://otel:4318/v1/traces"
        (p,) = h.processors
        assert isinstance(p, NonBlockingBatchProcessor) and p.exporter is e
    finally:
        h.shutdown()


def test_the_default_target_is_the_store_server_with_its_token():
    (h,) = build_exporters(
        cfg(
            store={"address": "http://store:4747"},
            exporter={"protocol": "http/protobuf", "spool": {"enabled": False}},
        ),
        environ={},
    )
    (g,) = build_exporters(
        cfg(
            store={"address": "http://store:4747", "token": "s3"},
            exporter={"spool": {"enabled": False}},
        ),
        environ={},
    )
    try:
        assert (h.target.protocol, h.target.endpoint) == (
            "http/protobuf",
            "http://store:4747/v1/traces",
        )
        assert "authorization" not in h.target.headers
        assert (g.target.protocol, g.target.endpoint) == ("grpc", "store:4317")
        assert g.target.headers == {"authorization": "Bearer s3"}
    finally:
        h.shutdown()
        g.shutdown()


def test_the_setup_reaches_the_exporter_stage_by_a_plain_import():
    """No string import, no second exporter choice: one way from configuration to exporter."""
    import inspect

    from lightspan.instrumentation import setup

    source = inspect.getsource(setup)
    assert "importlib" not in source and "OTLPSpanExporter" not in source
    assert setup.exporter_from_config is exporter_from_config


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(ConfigError, match="OTLP protocol 'http/json'"):
        build_exporters(
            cfg(),
            environ={
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            },
        )


def test_service_name_from_configuration_unless_otel_service_name(monkeypatch):
    c = cfg(tracing={"service_name": "my-flows"})
    assert build_resource(c, environ={}).attributes["service.name"] == "my-flows"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert (
        build_resource(c, environ={"OTEL_SERVICE_NAME": "from-env"}).attributes["service.name"]
        == "from-env"
    )


def test_handle_uses_the_exporter_section_for_the_processor_and_counts():
    exp = InMemorySpanExporter()
    h = configure_tracing(
        cfg(exporter={"max_queue_size": 1234, "max_export_batch_size": 99}),
        exporters=[exp],
        set_global=False,
        environ={},
    )
    try:
        (p,) = [p for p in h.processors if isinstance(p, NonBlockingBatchProcessor)]
        assert p._max_queue == 1234 and p._batch == 99
        h.provider.get_tracer("t").start_span("x").end()
        assert h.force_flush()
        assert h.stats().exported == 1 and h.dropped == 0
    finally:
        h.shutdown()
    assert not h.instrumentor.is_instrumented_by_opentelemetry
