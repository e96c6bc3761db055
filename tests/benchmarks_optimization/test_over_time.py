"""The over-time scenario's bookkeeping: rows grouped by phase and resources id, priced per run.

The scenario itself (store server, real models, the trainer) is run by hand:
`.venv/bin/python benchmarks/optimization/over_time.py` (docs/performance.md has its figures).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.optimization.over_time import plot, summarize

from lightspan.engine import PriceTable

PRICES = PriceTable({"s": {"input": 1.0, "output": 2.0}, "b": {"input": 10.0, "output": 20.0}})


def row(run: int, phase: str, rid: str, model: str, reward: float, latency: float) -> dict:
    call = {"step": "x", "model": model, "input_tokens": 100, "output_tokens": 10}
    return {
        "run": run,
        "phase": phase,
        "end": 0.0,
        "task_id": f"t{run}",
        "config": rid,
        "reward": reward,
        "status": "succeeded",
        "latency_s": latency,
        "calls": [{**call, "latency_s": latency}],
        "output": "",
        "error": None,
    }


def test_summary_prices_each_run_and_splits_by_phase_and_resources(tmp_path: Path) -> None:
    rows = [
        row(0, "before", "wf:own", "b", 1.0, 4.0),
        row(1, "before", "wf:own", "b", 0.0, 6.0),
        row(2, "after", "wf:v1", "s", 1.0, 1.0),
    ]
    table = summarize(rows, PRICES)
    assert [r[:3] for r in table] == [["before", "wf:own", "2"], ["after", "wf:v1", "1"]]
    before, after = table
    # 100 input + 10 output tokens at USD 10 / 20 per 1M = 1,200 µUSD; at 1 / 2: 120 µUSD.
    assert before[3:] == ["0.50", "1200.0", "5.0", "10"]
    assert after[3:] == ["1.00", "120.0", "1.0", "10"]
    plot(rows, PRICES, 2, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
