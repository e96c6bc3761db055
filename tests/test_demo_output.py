"""What ``lightspan demo`` tells a newcomer: it fits 80 columns, says what ran, the unit and
source of cost, and where the traces went; answers print as people write them."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.test_cli import ROOT


def test_demo_at_80_columns_says_what_ran_cost_unit_and_where_traces_went(fake_llm):
    env = {**os.environ, "COLUMNS": "80"}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightspan",
            "demo",
            "--endpoint",
            fake_llm.base_url,
            "--model",
            "m",
            "--questions",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert "…" not in out, "a value was truncated at 80 columns"
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "workflow arithmetic-batch" in out
    assert "USD" in out and "llm.prices" in out
    assert "traces: rollout ro-" in out and "docs/setup-guide.md" in out
    # the fake echoes the prompt, so the concise answer's number is the question's last: 5, 3
    assert "│ 5 " in out and "5.0" not in out and "12.0" not in out


def test_demo_help_has_a_description():
    p = subprocess.run(
        [sys.executable, "-m", "lightspan", "demo", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert "organizer-worker" in p.stdout and "LightningStore" in p.stdout


def test_run_with_tracing_prints_the_rollout_id_and_a_failure_says_so(fake_llm, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("agentLightning: {enabled: true, store: {type: in_memory}}\n")
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "workflow: w\nresources:\n  prompts: {ask: 'Q: {question}'}\n"
        f"  llms: {{default: {{endpoint: '{fake_llm.base_url}', model: m}}}}\n"
        "steps:\n  - llm: {name: a, prompt: ask}\n"
    )
    base = [sys.executable, "-m", "lightspan", "run", str(wf), "--config", str(cfg)]
    ok = subprocess.run(
        [*base, "--input", "{question: hi}"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert '"rollout_id": "ro-' in ok.stdout
    assert "traced: rollout ro-" in ok.stderr and "in-memory store" in ok.stderr
    assert "note: no price for m:" in ok.stderr  # cost 0 is explained, not silent
    bad = subprocess.run(
        [*base, "--input", "{other: hi}"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1
    assert '"status": "failed"' in bad.stdout and "needs variable 'question'" in bad.stdout
