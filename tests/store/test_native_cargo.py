"""``cargo test`` of the Rust converter (native/), run by ``make test`` like every other test.

Skipped only on a machine without cargo (the Python converter is then the intake); with cargo,
a failing Rust unit test fails the suite."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[2] / "native"


@pytest.mark.timeout(900)
def test_cargo_test_passes() -> None:
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("no cargo on this machine")
    proc = subprocess.run(
        [cargo, "test", "--release", "--no-default-features", "--quiet"],
        cwd=NATIVE,
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    assert "test result: ok" in proc.stdout
