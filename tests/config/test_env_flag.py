"""One parser for on/off environment variables, used by every switch read outside the
configuration file (content capture, OTLP insecure)."""

from __future__ import annotations

import pytest

from lightspan.config import env_flag, parse_flag
from lightspan.exporter import resolve_target
from lightspan.instrumentation.instrumentor import CAPTURE_CONTENT_ENV, WorkflowInstrumentor


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", " yes ", "On"])
def test_on_words(raw):
    assert parse_flag(raw) is True
    assert parse_flag(raw, default=False) is True


@pytest.mark.parametrize("raw", ["0", "false", "no", "off", "Off", "maybe"])
def test_everything_else_is_off_even_with_an_on_default(raw):
    assert parse_flag(raw, default=True) is False


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_unset_or_empty_is_the_default(raw):
    assert parse_flag(raw) is False
    assert parse_flag(raw, default=True) is True


def test_env_flag_reads_the_given_mapping_else_os_environ(monkeypatch):
    assert env_flag("X_FLAG", {"X_FLAG": "yes"}) is True
    monkeypatch.setenv("X_FLAG", "on")
    assert env_flag("X_FLAG") is True
    assert env_flag("X_FLAG", {}) is False


def test_the_instrumentor_and_the_otlp_target_use_it(monkeypatch):
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "on")
    instrumentor = WorkflowInstrumentor()
    from opentelemetry.sdk.trace import TracerProvider

    instrumentor.instrument(tracer_provider=TracerProvider())
    try:
        assert instrumentor.listener is not None and instrumentor.listener.capture_content
    finally:
        instrumentor.uninstrument()
    target = resolve_target("grpc", "collector:4317", environ={"OTEL_EXPORTER_OTLP_INSECURE": "no"})
    assert target.insecure is False
    target = resolve_target("grpc", "collector:4317", environ={"OTEL_EXPORTER_OTLP_INSECURE": "1"})
    assert target.insecure is True
