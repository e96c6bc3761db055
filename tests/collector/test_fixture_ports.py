"""The fixtures' port handling: a port taken between picking and binding is retried.

Other test suites share the machine, so a "free" port can be gone by the time the Collector
binds it; start_on_free_ports must then start again on new ports, and must NOT retry a start-up
failure of any other kind.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.collector import (
    COLLECTOR_CONFIG_DIR,
    OTELCOL_BIN,
    StartupError,
    _loopback_ports,
    require_binary,
    start_on_free_ports,
)


def _env(health: int) -> dict[str, str]:
    grpc_port, http_port, metrics_port = _loopback_ports(3)
    return {
        "LIGHTSPAN_OTELCOL_GRPC": f"127.0.0.1:{grpc_port}",
        "LIGHTSPAN_OTELCOL_HTTP": f"127.0.0.1:{http_port}",
        "LIGHTSPAN_OTELCOL_HEALTH": f"127.0.0.1:{health}",
        "LIGHTSPAN_OTELCOL_METRICS_PORT": str(metrics_port),
        # debug.yaml's file exporter: a relative default would depend on the working directory.
        "LIGHTSPAN_OTELCOL_SPAN_FILE": os.path.join(
            tempfile.gettempdir(), f"otelcol-{health}.jsonl"
        ),
    }


def test_a_port_taken_meanwhile_is_retried_on_new_ports(tmp_path: Path) -> None:
    argv = [str(require_binary(OTELCOL_BIN, "build-collector.sh")), "--config"]
    argv.append(str(COLLECTOR_CONFIG_DIR / "debug.yaml"))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        envs = iter([_env(taken), _env(_loopback_ports(1)[0])])
        proc, env = start_on_free_ports(
            "collector",
            argv,
            lambda: next(envs),
            lambda e: f"http://{e['LIGHTSPAN_OTELCOL_HEALTH']}/",
            tmp_path / "otelcol.log",
        )
    try:
        assert env["LIGHTSPAN_OTELCOL_HEALTH"] != f"127.0.0.1:{taken}"
        assert "address already in use" in (tmp_path / "otelcol.log").read_text()
    finally:
        proc.stop()


def test_other_start_up_failures_are_not_retried(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (COLLECTOR_CONFIG_DIR / "production.yaml")
        .read_text()
        .replace("type: status_code", "type: no_such_policy")
    )
    argv = [str(require_binary(OTELCOL_BIN, "build-collector.sh")), "--config", str(bad)]
    calls = []

    def make_env() -> dict[str, str]:
        calls.append(1)
        return _env(_loopback_ports(1)[0])

    with pytest.raises(StartupError, match="no_such_policy"):
        start_on_free_ports(
            "collector",
            argv,
            make_env,
            lambda e: f"http://{e['LIGHTSPAN_OTELCOL_HEALTH']}/",
            tmp_path / "otelcol.log",
        )
    assert len(calls) == 1
