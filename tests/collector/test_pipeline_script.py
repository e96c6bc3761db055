"""collector-config/scripts/pipeline.sh, the developer's start/stop/status, on free ports.

Checks that `start dev` leaves Jaeger and the Collector running and healthy (pid files and logs
in the chosen state directory), a span sent to the Collector is readable from Jaeger, and
`stop` ends both processes.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.collector.otel_send import otlp_tracer_provider, sent_span
from tests.fixtures.collector import (
    COLLECTOR_CONFIG_DIR,
    JAEGER_BIN,
    OTELCOL_BIN,
    Jaeger,
    require_binary,
)
from tests.fixtures.ports import free_port

PIPELINE = COLLECTOR_CONFIG_DIR / "scripts" / "pipeline.sh"


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PIPELINE), *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **env},
    )


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def test_pipeline_script_starts_reports_and_stops_jaeger_and_collector(tmp_path: Path) -> None:
    require_binary(OTELCOL_BIN, "build-collector.sh")
    require_binary(JAEGER_BIN, "build-jaeger.sh")
    loop = "127.0.0.1"
    env = {
        "LIGHTSPAN_PIPELINE_DIR": str(tmp_path),
        "LIGHTSPAN_OTELCOL_GRPC": f"{loop}:{free_port()}",
        "LIGHTSPAN_OTELCOL_HTTP": f"{loop}:{free_port()}",
        "LIGHTSPAN_OTELCOL_HEALTH": f"{loop}:{free_port()}",
        "LIGHTSPAN_OTELCOL_METRICS_PORT": str(free_port()),
        "LIGHTSPAN_JAEGER_OTLP_GRPC": f"{loop}:{free_port()}",
        "LIGHTSPAN_JAEGER_OTLP_HTTP": f"{loop}:{free_port()}",
        "LIGHTSPAN_JAEGER_QUERY_HTTP": f"{loop}:{free_port()}",
        "LIGHTSPAN_JAEGER_QUERY_GRPC": f"{loop}:{free_port()}",
        "LIGHTSPAN_STORE_OTLP_GRPC": f"{loop}:{free_port()}",  # no store: its exporter retries
    }
    started = _run(["start", "dev"], env)
    try:
        assert started.returncode == 0, started.stderr
        for name in ("jaeger", "otelcol"):
            assert _alive(tmp_path / f"{name}.pid"), f"{name} is not running after start"
            assert (tmp_path / f"{name}.log").exists()

        status = _run(["status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "healthy" in status.stdout and "answers" in status.stdout

        # Starting again is a no-op, not a second pair of processes.
        pids = {n: (tmp_path / f"{n}.pid").read_text() for n in ("jaeger", "otelcol")}
        assert _run(["start", "dev"], env).returncode == 0
        assert pids == {n: (tmp_path / f"{n}.pid").read_text() for n in ("jaeger", "otelcol")}

        service = f"lightspan-test-script-{uuid.uuid4().hex[:8]}"
        with otlp_tracer_provider(env["LIGHTSPAN_OTELCOL_GRPC"], service) as (provider, memory):
            with provider.get_tracer("t").start_as_current_span("hello"):
                pass
        (span,) = [sent_span(s) for s in memory.get_finished_spans()]
        jaeger = Jaeger("", "", f"http://{env['LIGHTSPAN_JAEGER_QUERY_HTTP']}", process=None)  # type: ignore[arg-type]
        assert jaeger.wait_for_trace(span.trace_id, 1)["spans"][0]["spanID"] == span.span_id
    finally:
        stopped = _run(["stop"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "jaeger.pid").exists() and not (tmp_path / "otelcol.pid").exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{env['LIGHTSPAN_OTELCOL_HEALTH']}/", timeout=1)
    assert _run(["status"], env).returncode == 3
