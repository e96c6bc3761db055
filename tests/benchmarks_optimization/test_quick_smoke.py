"""CI smoke test: `benchmarks/optimization/run.py --quick` on the real local models, trainer included.

Select it with `pytest -m optbench`. It needs SmolLM2 and Qwen2.5-Coder-0.5B fetched
(`.venv/bin/python -m lightspan.localllm fetch smollm2-135m qwen2.5-coder-0.5b`) and the
trainer stage installed; it takes about five minutes on a 2-core machine. It runs every
(configuration, task) afresh (a temporary run cache), runs `lightspan train run` for real, and
reuses only the CPU price measurements of the shared cache when they are there.

Besides the report's structure, it checks that the figures are the runs' own: the baseline and
oracle rows are recomputed here from the run cache the benchmark wrote, the optimized row from
the runs of the trainer's winner, and the trainer's report from its own rollouts.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchmarks.optimization.run import DEFAULT_CACHE, QUICK_MODELS, QUICK_TRAINER_PAIRS
from benchmarks.optimization.workflows import StepChoice, config_key, uniform_config

from lightspan.localllm.models import is_fetched

REPO = Path(__file__).resolve().parents[2]
QUICK_PAIRS = (
    ("arithmetic", "vote"),
    ("extraction", "organizer_worker"),
    ("classification", "sequence"),
)


@pytest.mark.optbench
@pytest.mark.llm
@pytest.mark.timeout(900)
def test_quick_run_reports_baseline_optimized_and_oracle(tmp_path: Path) -> None:
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
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=890,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "trainer not available" not in proc.stdout, proc.stdout[-2000:]
    report = (out / "report.md").read_text()
    for family, shape in QUICK_PAIRS:
        assert f"| {family} | {shape} | baseline |" in report
        assert f"| {family} | {shape} | oracle |" in report
    (t_family, t_shape) = QUICK_TRAINER_PAIRS[0]
    assert f"| {t_family} | {t_shape} | optimized |" in report
    assert "seed: 0" in report and "qwen2.5-coder-0.5b" in report and "Price tables" in report
    assert "lightspan train run --algorithm cost" in report and "## Trainer" in report
    for png in ("cost.png", "latency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    results = json.loads((out / "results.json").read_text())
    runs = [json.loads(x) for x in (cache / "runs.jsonl").read_text().splitlines()]
    assert runs and all(r["calls"] for r in runs if r["status"] == "succeeded")
    by_config: dict[str, dict[str, dict]] = {}
    for r in runs:
        by_config.setdefault(r["config"], {})[r["task_id"]] = r
    for cell in results["cells"]:
        arms = cell["arms"]
        base, oracle = arms["baseline"], arms["oracle"]
        trained = (cell["family"], cell["shape"]) == (t_family, t_shape)
        assert base["n"] == oracle["n"] == 2
        # The grid's baseline is in the grid, so the oracle never does worse on any task.
        grid_base = config_key(uniform_config(cell["shape"], StepChoice(QUICK_MODELS[-1], 48)))
        grid_base_runs = list(by_config[grid_base].values())
        assert len(grid_base_runs) == 2
        assert oracle["reward_mean"] >= statistics.fmean(r["reward"] for r in grid_base_runs)
        assert base["tokens_per_run"] > 0 and base["cost_per_run"] > 0
        # Figures are the runs' own: recompute the baseline's reward and tokens from the cache
        # (for the trained workflow, its runs interleaved with the optimized arm's).
        (base_cfg,) = base["configs"]
        assert base_cfg == ("paired-baseline" if trained else grid_base)
        base_runs = list(by_config[base_cfg].values())
        assert len(base_runs) == 2
        assert base["reward_mean"] == pytest.approx(
            statistics.fmean(r["reward"] for r in base_runs)
        )
        tokens = statistics.fmean(
            sum(c["input_tokens"] + c["output_tokens"] for c in r["calls"]) for r in base_runs
        )
        assert base["tokens_per_run"] == pytest.approx(tokens)
        for cfg in oracle["configs"]:
            assert cfg in by_config, f"oracle chose {cfg}, which has no recorded run"
        if trained:
            opt = arms["optimized"]
            opt_runs = list(by_config["optimized"].values())
            assert opt["n"] == len(opt_runs) == 2
            assert opt["reward_mean"] == pytest.approx(
                statistics.fmean(r["reward"] for r in opt_runs)
            )
            assert opt["tokens_per_run"] > 0
            # Each test task's paired rewards are the runs' own, and the goal line counts them.
            pairs = results["paired_test_rewards"][f"{t_family}x{t_shape}"]
            assert {p["task_id"]: (p["baseline"], p["optimized"]) for p in pairs} == {
                t: (base_cfg_runs["reward"], by_config["optimized"][t]["reward"])
                for t, base_cfg_runs in by_config["paired-baseline"].items()
            }
            lower = sum(p["optimized"] < p["baseline"] for p in pairs)
            higher = sum(p["optimized"] > p["baseline"] for p in pairs)
            assert f"lower on {lower} and higher on {higher} of 2 tasks" in report
        else:
            assert "optimized" not in arms

    # The trainer ran for real: its report counts its own rollouts and names a decision.
    trainer = results["trainer"][f"{t_family}-{t_shape}"]
    assert "error" not in trainer, trainer
    assert trainer["status"] in ("completed", "budget_exhausted")
    assert trainer["trainer_spend"]["rollouts"] > 0 and trainer["resources"]
    assert (out / "trainer" / f"{t_family}-{t_shape}" / "report" / "report.json").exists()
    print(f"--quick took {elapsed:.0f}s")
