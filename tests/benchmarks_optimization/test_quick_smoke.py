"""CI smoke test: `benchmarks/optimization/run.py --quick` on the real local models.

Select it with `pytest -m optbench`. It needs SmolLM2 and Qwen2.5-Coder-0.5B fetched
(`.venv/bin/python -m lightspan.localllm fetch smollm2-135m qwen2.5-coder-0.5b`) and takes a
few minutes; it runs every (configuration, task) afresh (a temporary run cache) and reuses
only the CPU price measurements of the shared cache when they are there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchmarks.optimization.run import DEFAULT_CACHE, QUICK_MODELS

from lightspan.localllm.models import is_fetched

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.optbench
@pytest.mark.llm
@pytest.mark.timeout(600)
def test_quick_run_reports_baseline_and_oracle(tmp_path: Path) -> None:
    missing = [m for m in QUICK_MODELS if not is_fetched(m)]
    if missing:
        pytest.fail(
            f"models not fetched: {missing}; run `.venv/bin/python -m lightspan.localllm fetch "
            f"{' '.join(missing)}`",
            pytrace=False,
        )
    cache = tmp_path / "cache"
    cache.mkdir()
    if (DEFAULT_CACHE / "prices.json").exists():
        shutil.copy(DEFAULT_CACHE / "prices.json", cache / "prices.json")
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/optimization/run.py",
            "--quick",
            "--no-trainer",
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=590,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "trainer not available" in proc.stdout
    report = (out / "report.md").read_text()
    for family, shape in (
        ("arithmetic", "organizer_worker"),
        ("extraction", "vote"),
        ("classification", "sequence"),
    ):
        assert f"| {family} | {shape} | baseline |" in report
        assert f"| {family} | {shape} | oracle |" in report
    assert "seed: 0" in report and "qwen2.5-coder-0.5b" in report and "Price tables" in report
    for png in ("cost.png", "latency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    for cell in results["cells"]:
        base, oracle = cell["arms"]["baseline"], cell["arms"]["oracle"]
        assert base["n"] == oracle["n"] == 2
        # The baseline is in the grid, so the oracle never does worse on any task.
        assert oracle["reward_mean"] >= base["reward_mean"]
        assert base["tokens_per_run"] > 0 and base["cost_per_run"] > 0
    runs = [json.loads(x) for x in (cache / "runs.jsonl").read_text().splitlines()]
    assert runs and all(r["calls"] for r in runs if r["status"] == "succeeded")
    print(f"--quick took {elapsed:.0f}s")
