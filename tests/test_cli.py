"""The ``lightspan`` command line: help, workflows from YAML, configuration errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightspan.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lightspan", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_help_lists_the_commands():
    p = run_cli("--help")
    assert p.returncode == 0
    for cmd in ("demo", "run", "config", "llm"):
        assert cmd in p.stdout


def test_run_a_yaml_workflow(tmp_path, capsys):
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "workflow: w\nevaluator: tests.engine.helpers:exact\nsteps:\n"
        "  - task: {name: a, call: 'tests.engine.helpers:add_one'}\n"
        "  - task: {name: b, call: 'tests.engine.helpers:double'}\n"
    )
    assert main(["run", str(wf), "--input", "3", "--expected", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded" and out["output"] == 8 and out["reward"] == 1.0


def test_run_reports_definition_errors_without_traceback(tmp_path, capsys):
    wf = tmp_path / "wf.yaml"
    wf.write_text("workflow: w\nsteps:\n  - task: {name: a}\n")
    assert main(["run", str(wf)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "missing required key 'call'" in err and "Traceback" not in err


def test_config_validate_and_show(tmp_path, capsys):
    good = tmp_path / "c.yaml"
    good.write_text("agentLightning: {enabled: true, store: {token: sekret}}\n")
    assert main(["config", "validate", "--config", str(good)]) == 0
    assert main(["config", "show", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "enabled: true" in out and "sekret" not in out
    bad = tmp_path / "b.yaml"
    bad.write_text("agentLightning: {optimization: {algorithm: PPO}}\n")
    assert main(["config", "validate", "--config", str(bad)]) == 2
    assert "agentLightning.optimization.algorithm" in capsys.readouterr().err


@pytest.mark.llm
def test_demo_end_to_end_against_the_local_model(llm_server):
    p = run_cli(
        "demo", "--endpoint", llm_server.base_url, "--model", llm_server.model, "--questions", "1"
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Per-question results" in p.stdout and "LLM calls" in p.stdout
