"""The build scripts are no-ops when the binaries are built (what `make test` relies on).

CI runs them in .ci/setup.d/30-collector.sh before pytest, so here they must find the binaries
up to date and return at once, without touching the Go toolchain.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.fixtures.collector import COLLECTOR_CONFIG_DIR, JAEGER_BIN, OTELCOL_BIN, require_binary


@pytest.mark.parametrize(
    ("script", "binary"),
    [("build-collector.sh", OTELCOL_BIN), ("build-jaeger.sh", JAEGER_BIN)],
)
def test_build_script_is_a_no_op_when_the_binary_is_up_to_date(script: str, binary) -> None:
    require_binary(binary, script)
    before = binary.stat().st_mtime_ns
    t0 = time.monotonic()
    result = subprocess.run(
        ["bash", str(COLLECTOR_CONFIG_DIR / "scripts" / script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr
    assert time.monotonic() - t0 < 10
    assert binary.stat().st_mtime_ns == before
