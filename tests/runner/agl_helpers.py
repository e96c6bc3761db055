"""Running scripts in Agent Lightning's side venv (``.ci/setup.d/40-agl-interop.sh``).

lightspan is put on the script's path (``PYTHONPATH=src``) rather than installed there, so the
venv keeps Agent Lightning's own pins. A missing venv FAILS the test: CI must prove that
Agent Lightning drives lightspan workflows, not skip it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).parent / "agl_scripts"
AGL_VENV = Path(
    os.environ.get("LIGHTSPAN_AGL_VENV", Path.home() / ".cache/lightspan/agl-venv")
).expanduser()


def agl_python() -> Path:
    python = AGL_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"Agent Lightning venv missing at {AGL_VENV}; run .ci/setup.d/40-agl-interop.sh"
        )
    return python


def run_agl_script(
    script: str, *args: str, timeout: float = 240, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``agl_scripts/<script>`` in the agl venv; its last stdout line is a JSON report."""
    full_env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{SCRIPTS}",
        # agl's client-server strategy serves its store on this port (default 4747).
        "AGL_SERVER_PORT": str(free_port()),
        "AGENTOPS_API_KEY": "dummy",
        **(env or {}),
    }
    with tempfile.TemporaryDirectory(prefix="agl-run-") as cwd:  # AgentOps writes a log here
        proc = subprocess.run(
            [str(agl_python()), str(SCRIPTS / script), *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=cwd,
        )
    if proc.returncode != 0:
        # The first traceback is the cause; interpreter-shutdown noise follows it.
        err = proc.stderr
        first = err.find("Traceback (most recent call last)")
        pytest.fail(f"{script} failed (exit {proc.returncode}):\n{err[max(first, 0) :][:6000]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
