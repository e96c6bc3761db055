"""benchmarks/optimization/probes/routing.py: the routed arm takes the cheaper set's run for short
inputs and the baseline's for long ones, and counts lost tasks against the baseline."""

from __future__ import annotations

from benchmarks.optimization.probes.flips import Chain
from benchmarks.optimization.probes.routing import _row, input_chars, routed
from benchmarks.optimization.tasks import generate

from lightspan.engine import PriceTable


def test_long_inputs_take_the_baseline_run() -> None:
    tasks = generate("classification", "train", 12, seed=98)
    limit = sorted(input_chars(t) for t in tasks)[5]  # six tasks at or under it
    base = {t.id: Chain(1.0, None, {"big": [100, 50]}, 10.0) for t in tasks}
    cheap = {t.id: Chain(0.0, None, {"small": [100, 10]}, 2.0) for t in tasks}
    route = routed(cheap, base, tasks, limit)
    short = [t for t in tasks if input_chars(t) <= limit]
    assert len(short) == 6
    assert all(route[t.id] is (cheap if t in short else base)[t.id] for t in tasks)
    prices = PriceTable(
        {"big": {"input": 1.0, "output": 1.0}, "small": {"input": 0.1, "output": 0.1}}
    )
    cells = _row("routed", route, base, tasks, {"t": prices})
    assert cells[1] == "6/12" and cells[2] == "6 / 0"  # every short task lost here
    # Cost: half the tasks at 150 tokens x 1.0, half at 110 x 0.1, per run, in µUSD.
    assert cells[4].startswith(f"{(150 * 1.0 + 110 * 0.1) / 2:.1f} (")
