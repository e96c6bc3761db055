"""Figures per arm (baseline / optimized / oracle), the cuts, the table, report.md and plots.

Why a bootstrap CI: few tasks per cell and rewards bounded in [0, 1], so a seeded percentile
bootstrap of the mean is honest where a normal interval would leave [0, 1].
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.optimization.oracle import RunRecord

from lightspan.engine import PriceTable


def bootstrap_ci(
    values: Sequence[float], *, seed: int = 0, n: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (a single value gives a point)."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    k = len(values)
    means = sorted(sum(rng.choices(values, k=k)) / k for _ in range(n))
    lo = means[int((1 - level) / 2 * n)]
    hi = means[min(n - 1, int((1 + level) / 2 * n))]
    return (lo, hi)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100])."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(slots=True)
class ArmFigures:
    """One arm's figures over the test tasks of one family x shape."""

    arm: str
    n: int
    reward_mean: float
    reward_ci: tuple[float, float]
    cost_per_run: float
    cost_per_run_public: float
    latency_p50_s: float
    latency_p95_s: float
    tokens_per_run: float
    configs: dict[str, int] = field(default_factory=dict)
    """Configuration -> number of tasks it was chosen for (oracle) or run on."""

    @classmethod
    def of(
        cls, arm: str, runs: Sequence[RunRecord], cpu: PriceTable, public: PriceTable, seed: int
    ) -> ArmFigures:
        rewards = [r.reward for r in runs]
        lat = [r.latency_s for r in runs]
        configs: dict[str, int] = {}
        for r in runs:
            configs[r.config] = configs.get(r.config, 0) + 1
        return cls(
            arm=arm,
            n=len(runs),
            reward_mean=statistics.fmean(rewards) if rewards else float("nan"),
            reward_ci=bootstrap_ci(rewards, seed=seed),
            cost_per_run=statistics.fmean(r.cost(cpu) for r in runs) if runs else float("nan"),
            cost_per_run_public=(
                statistics.fmean(r.cost(public) for r in runs) if runs else float("nan")
            ),
            latency_p50_s=percentile(lat, 50),
            latency_p95_s=percentile(lat, 95),
            tokens_per_run=statistics.fmean(r.tokens for r in runs) if runs else float("nan"),
            configs=configs,
        )


def cut(base: float, new: float) -> float:
    """Relative cut in percent (positive = cheaper/faster than baseline)."""
    return (1 - new / base) * 100 if base else float("nan")


@dataclass(slots=True)
class Cell:
    family: str
    shape: str
    arms: dict[str, ArmFigures]
    reward_diff_ci: tuple[float, float] | None = None
    """95% CI of (arm - baseline) reward per task, paired, for the best non-baseline arm."""


def paired_diff_ci(
    base: Sequence[RunRecord], other: Sequence[RunRecord], seed: int
) -> tuple[float, float]:
    by_task = {r.task_id: r.reward for r in base}
    diffs = [r.reward - by_task[r.task_id] for r in other if r.task_id in by_task]
    return bootstrap_ci(diffs, seed=seed)


def _fmt_cost(x: float) -> str:
    return f"{x * 1e6:.1f}"


def table_rows(cells: Sequence[Cell]) -> list[list[str]]:
    """Rows of the results table (cost in micro-USD per run)."""
    rows = []
    for c in cells:
        base = c.arms.get("baseline")
        for name, a in c.arms.items():
            cuts = ["", "", ""]
            if base is not None and name != "baseline":
                cuts = [
                    f"{cut(base.cost_per_run, a.cost_per_run):+.0f}%",
                    f"{cut(base.cost_per_run_public, a.cost_per_run_public):+.0f}%",
                    f"{cut(base.latency_p50_s, a.latency_p50_s):+.0f}%",
                ]
            rows.append(
                [
                    c.family,
                    c.shape,
                    name,
                    str(a.n),
                    f"{a.reward_mean:.2f} [{a.reward_ci[0]:.2f}, {a.reward_ci[1]:.2f}]",
                    _fmt_cost(a.cost_per_run),
                    _fmt_cost(a.cost_per_run_public),
                    f"{a.latency_p50_s:.1f}",
                    f"{a.latency_p95_s:.1f}",
                    f"{a.tokens_per_run:.0f}",
                    *cuts,
                ]
            )
    return rows


HEADERS = [
    "family",
    "workflow",
    "arm",
    "n",
    "reward [95% CI]",
    "cost/run CPU (µUSD)",
    "cost/run public (µUSD)",
    "p50 s",
    "p95 s",
    "tokens/run",
    "cost cut CPU",
    "cost cut public",
    "p50 cut",
]


def print_table(cells: Sequence[Cell], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="optimization benchmark (test split)")
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("family", "workflow", "arm") else "right")
    for row in table_rows(cells):
        t.add_row(*row)
    (console or Console(width=200)).print(t)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def write_plots(cells: Sequence[Cell], out_dir: Path) -> list[Path]:
    """cost.png (cost per run per arm) and latency.png (p50 with p95 whiskers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = ["baseline", "majority join", "optimized", "oracle"]
    arms = sorted({a for c in cells for a in c.arms}, key=order.index)
    labels = [f"{c.family}\n{c.shape}" for c in cells]
    width = 0.8 / max(len(arms), 1)
    paths = []
    for name, getter, ylabel in (
        ("cost.png", lambda a: a.cost_per_run * 1e6, "cost per run (µUSD, CPU price table)"),
        ("latency.png", lambda a: a.latency_p50_s, "latency p50 (s); whisker: p95"),
    ):
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cells)), 4))
        for i, arm in enumerate(arms):
            xs = [j + i * width for j in range(len(cells))]
            ys = [getter(c.arms[arm]) if arm in c.arms else 0 for c in cells]
            kw: dict[str, Any] = {}
            if name == "latency.png":
                kw["yerr"] = [
                    [0] * len(cells),
                    [
                        (c.arms[arm].latency_p95_s - c.arms[arm].latency_p50_s)
                        if arm in c.arms
                        else 0
                        for c in cells
                    ],
                ]
            ax.bar(xs, ys, width, label=arm, **kw)
        ax.set_xticks([j + width * (len(arms) - 1) / 2 for j in range(len(cells))])
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend()
        fig.tight_layout()
        p = out_dir / name
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
