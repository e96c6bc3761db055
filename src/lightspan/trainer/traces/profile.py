"""``lightspan train profile``: where a workflow's money and time go, from stored spans alone.

Why no labels: production runs carry no expected answers, but their spans already say which
step and model cost what, how long outputs are (the basis for ``max_tokens``), how often a
call hit ``finish_reason=length`` or failed, and how each resource set was rewarded.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from lightspan.trainer.evaluation.stats import mean, quantile
from lightspan.trainer.traces.spans import RunTrace


def _q(values: list[float]) -> dict[str, float | None]:
    return {f"p{int(q * 100)}": quantile(values, q) for q in (0.5, 0.95, 0.99)}


def profile_runs(runs: list[RunTrace]) -> dict[str, Any]:
    """Per (step, model): calls, token quantiles, cost/latency share, length and failure rates;
    per resources id: runs and mean reward. Latency share is the step's summed call time over
    the runs' summed wall time (parallel branches can make shares add up above 1)."""
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    total_cost = 0.0
    total_time = 0.0
    for run in runs:
        total_time += run.result.latency_s
        for c in run.result.calls:
            groups[(c.step, c.model)].append(c)
            total_cost += c.cost
    steps = []
    for (step, model), calls in sorted(groups.items()):
        cost = sum(c.cost for c in calls)
        time_s = sum(c.latency_s for c in calls)
        ok = [c for c in calls if c.ok]
        steps.append(
            {
                "step": step,
                "model": model,
                "calls": len(calls),
                "input_tokens": _q([c.input_tokens for c in ok]),
                "output_tokens": _q([c.output_tokens for c in ok]),
                "cost": cost,
                "cost_share": cost / total_cost if total_cost else 0.0,
                "latency_s": time_s,
                "latency_share": time_s / total_time if total_time else 0.0,
                "length_rate": sum(c.finish_reason == "length" for c in ok) / len(ok) if ok else 0,
                "failure_rate": sum(not c.ok for c in calls) / len(calls),
                "max_tokens_seen": sorted({c.max_tokens for c in calls if c.max_tokens}),
            }
        )
    by_res: dict[str, list[RunTrace]] = defaultdict(list)
    for run in runs:
        by_res[run.resources_id or "?"].append(run)
    rewards = [
        {
            "resources_id": rid,
            "runs": len(rs),
            "rewarded_runs": sum(r.has_reward for r in rs),
            "reward_mean": mean([r.result.reward for r in rs if r.has_reward]),
            "failure_rate": sum(not r.result.ok for r in rs) / len(rs),
            "cost_per_run": sum(r.result.cost for r in rs) / len(rs),
        }
        for rid, rs in sorted(by_res.items())
    ]
    return {
        "runs": len(runs),
        "total_cost": total_cost,
        "total_latency_s": total_time,
        "steps": steps,
        "rewards": rewards,
    }


def render_profile(profile: dict[str, Any], workflow: str) -> Any:
    """A rich table of :func:`profile_runs`' output."""
    from rich.table import Table

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    t = Table(title=f"{workflow}: {profile['runs']} runs, cost {profile['total_cost']:.6g}")
    for col in (
        "step",
        "model",
        "calls",
        "in p50/p95/p99",
        "out p50/p95/p99",
        "cost %",
        "time %",
        "length %",
        "fail %",
    ):
        t.add_column(col, justify="left" if col in ("step", "model") else "right")
    for s in profile["steps"]:
        i, o = s["input_tokens"], s["output_tokens"]
        t.add_row(
            s["step"],
            s["model"],
            str(s["calls"]),
            f"{f(i['p50'])}/{f(i['p95'])}/{f(i['p99'])}",
            f"{f(o['p50'])}/{f(o['p95'])}/{f(o['p99'])}",
            f"{100 * s['cost_share']:.1f}",
            f"{100 * s['latency_share']:.1f}",
            f"{100 * s['length_rate']:.1f}",
            f"{100 * s['failure_rate']:.1f}",
        )
    return t
