"""Small statistics for deciding between resource sets on few tasks.

Why a paired bootstrap: candidates are scored on the same tasks, so the per-task reward
differences carry the signal; resampling them gives a lower bound on the true difference
without assuming normal rewards (rewards are often 0/1).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default); ``None`` for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def bootstrap_mean_ci(
    values: Sequence[float], *, level: float = 0.95, n: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean."""
    if not values:
        return None
    rng = random.Random(seed)
    k = len(values)
    means = sorted(sum(values[rng.randrange(k)] for _ in range(k)) / k for _ in range(n))
    alpha = (1 - level) / 2
    return means[int(alpha * (n - 1))], means[int((1 - alpha) * (n - 1))]


def paired_changes(candidate: Sequence[float], baseline: Sequence[float]) -> tuple[int, int]:
    """On how many paired tasks the candidate scored lower and higher than the baseline.

    Why beside the bound: with 0/1 rewards on a dozen tasks one lost task puts the bound far
    below the gate, so a reader needs the counts to tell a change that is worse from one that
    lost a single task, or a tie everywhere from gains that outweigh a loss."""
    if len(candidate) != len(baseline):
        raise ValueError(f"paired samples differ in size: {len(candidate)} vs {len(baseline)}")
    pairs = list(zip(candidate, baseline, strict=True))
    return sum(c < b for c, b in pairs), sum(c > b for c, b in pairs)


def paired_bootstrap_lower(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    level: float = 0.95,
    n: int = 2000,
    seed: int = 0,
) -> float:
    """One-sided lower bound (at ``level``) of mean(candidate - baseline) over paired tasks."""
    if len(candidate) != len(baseline):
        raise ValueError(f"paired samples differ in size: {len(candidate)} vs {len(baseline)}")
    if not candidate:
        raise ValueError("paired bootstrap of no tasks")
    diffs = [c - b for c, b in zip(candidate, baseline, strict=True)]
    rng = random.Random(seed)
    k = len(diffs)
    means = sorted(sum(diffs[rng.randrange(k)] for _ in range(k)) / k for _ in range(n))
    return means[int((1 - level) * (n - 1))]
