"""Figures of a resource set on tasks, and the report files of a training run.

Why fixed field names: ``report.json`` is read by the benchmark (optbench) and by users
checking a claim; ``baseline`` / ``optimized`` each carry ``reward_mean`` (+ ``reward_ci95``),
``cost_per_run``, ``latency_p50_s``, ``latency_p95_s``, ``tokens_per_run``, measured on the
held-out test split.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from lightspan.trainer.evaluation.evaluate import Result
from lightspan.trainer.evaluation.stats import bootstrap_mean_ci, quantile


def summarize(results: list[Result]) -> dict[str, Any]:
    """The headline figures of runs (one per task)."""
    n = len(results)
    rewards = [r.reward for r in results]
    lat = [r.latency_s for r in results]
    ci = bootstrap_mean_ci(rewards)
    return {
        "runs": n,
        "reward_mean": sum(rewards) / n if n else None,
        "reward_ci95": list(ci) if ci else None,
        "cost_per_run": sum(r.cost for r in results) / n if n else None,
        "latency_p50_s": quantile(lat, 0.5),
        "latency_p95_s": quantile(lat, 0.95),
        "tokens_per_run": sum(r.tokens for r in results) / n if n else None,
        "input_tokens_per_run": sum(r.input_tokens for r in results) / n if n else None,
        "output_tokens_per_run": sum(r.output_tokens for r in results) / n if n else None,
        "failure_rate": sum(not r.ok for r in results) / n if n else None,
    }


def per_step(results: list[Result]) -> dict[str, dict[str, Any]]:
    """Per step: model(s), cost/latency/tokens per run, cost share."""
    n = len(results) or 1
    acc: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "models": set(),
            "cost": 0.0,
            "latency_s": 0.0,
            "tokens": 0,
            "calls": 0,
            "max_tokens": set(),
        }
    )
    total = 0.0
    for r in results:
        for c in r.calls:
            a = acc[c.step]
            a["models"].add(c.model)
            a["cost"] += c.cost
            a["latency_s"] += c.latency_s
            a["tokens"] += c.input_tokens + c.output_tokens
            a["calls"] += 1
            if c.max_tokens:
                a["max_tokens"].add(int(c.max_tokens))
            total += c.cost
    return {
        step: {
            "models": sorted(a["models"]),
            "max_tokens": sorted(a["max_tokens"]),
            "calls_per_run": a["calls"] / n,
            "cost_per_run": a["cost"] / n,
            "cost_share": a["cost"] / total if total else 0.0,
            "latency_per_run_s": a["latency_s"] / n,
            "tokens_per_run": a["tokens"] / n,
        }
        for step, a in sorted(acc.items())
    }


def step_table(before: list[Result], after: list[Result]) -> list[dict[str, Any]]:
    b, a = per_step(before), per_step(after)
    return [{"step": s, "before": b.get(s), "after": a.get(s)} for s in sorted(set(b) | set(a))]


def _pct(new: float | None, old: float | None) -> str:
    if new is None or old is None or old == 0:
        return "-"
    return f"{100 * (new - old) / old:+.1f}%"


def _num(v: float | None) -> str:
    """A figure of the report's tables (``-`` when missing)."""
    return "-" if v is None else f"{v:.6g}"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    b, o = report.get("baseline") or {}, report.get("optimized") or {}
    lines = [
        f"# Training report: {report.get('workflow')}",
        "",
        f"- algorithm: {report.get('algorithm')}; status: **{report.get('status')}**",
        f"- tasks: {report.get('split')}; published: {report.get('published')}",
        f"- decision: {report.get('decision')}",
        *(
            [f"- route (fitted on train and val): {report['route']['why']}"]
            if report.get("route")
            else []
        ),
        "",
        "| figure (test split) | baseline | optimized | change |",
        "|---|---|---|---|",
    ]
    for key in ("reward_mean", "cost_per_run", "latency_p50_s", "latency_p95_s", "tokens_per_run"):
        bv, ov = b.get(key), o.get(key)
        lines.append(f"| {key} | {_num(bv)} | {_num(ov)} | {_pct(ov, bv)} |")
    if b.get("reward_ci95") or o.get("reward_ci95"):
        lines.append(f"| reward 95% CI | {b.get('reward_ci95')} | {o.get('reward_ci95')} | |")
    lines += _fallback_lines(report)
    lines += ["", "## Per step", "", "| step | before | after |", "|---|---|---|"]
    for row in report.get("steps", []):

        def d(x: dict[str, Any] | None) -> str:
            if not x:
                return "-"
            return (
                f"{','.join(x['models'])} max_tokens={x['max_tokens'] or '-'} "
                f"cost/run={x['cost_per_run']:.3g} share={100 * x['cost_share']:.0f}% "
                f"time/run={x['latency_per_run_s']:.2f}s"
            )

        lines.append(f"| {row['step']} | {d(row['before'])} | {d(row['after'])} |")
    spend = report.get("trainer_spend") or {}
    lines += ["", "## Trainer spend", "", "```", json.dumps(spend, indent=2), "```"]
    notes = report.get("notes") or []
    if notes:
        lines += ["", "## Search notes", ""] + [f"- {n}" for n in notes]
    path.write_text("\n".join(lines) + "\n")


def _fallback_lines(report: dict[str, Any]) -> list[str]:
    """The winner and its fallbacks side by side on test, when the search named fallbacks."""
    fbs, w, b = report.get("fallbacks"), report.get("winner"), report.get("baseline") or {}
    if not fbs or not w:
        return []
    chosen = next((f"fallback {k}" for k, fb in enumerate(fbs, 1) if fb.get("chosen")), None)
    lines = [
        "",
        "The fallbacks (the winner routed, when a route was fitted, then the sets the search"
        " accepted before its winner, latest first) were"
        f" tested beside it; {chosen or 'none'} was chosen in its place.",
        "",
        "| fallback | set |",
        "|---|---|",
        *(f"| {k} | {_fallback_set(fb)} |" for k, fb in enumerate(fbs, 1)),
        "",
        "| figure (test split) | winner | "
        + " | ".join(f"fallback {k}" for k in range(1, len(fbs) + 1))
        + " |",
        "|---|---|" + "---|" * len(fbs),
    ]
    for key in ("reward_mean", "cost_per_run", "latency_p50_s"):
        cells = [w.get(key)] + [fb["summary"].get(key) for fb in fbs]
        lines.append(
            f"| {key} | " + " | ".join(f"{_num(v)} ({_pct(v, b.get(key))})" for v in cells) + " |"
        )
    return lines


def _fallback_set(fb: dict[str, Any]) -> str:
    return fb["label"] if fb.get("kind") == "routed" else f"accepted up to {fb['label']}"


def write_plots(report: dict[str, Any], out: Path) -> list[str]:
    """PNG plots; returns the file names written (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    cands = report.get("candidates") or []
    if cands:
        fig, ax = plt.subplots(figsize=(6, 4))
        key = "cost" if report.get("cost_axis") == "cost" else "latency_s"
        for label, pick, color, marker in (
            ("rejected", lambda c: not c["accepted"], "tab:gray", "o"),
            ("accepted", lambda c: c["accepted"] and c["label"] != "baseline", "tab:green", "o"),
            ("baseline", lambda c: c["label"] == "baseline", "tab:blue", "*"),
        ):
            sel = [c for c in cands if pick(c)]
            if sel:
                ax.scatter(
                    [c[key] for c in sel],
                    [c["reward"] for c in sel],
                    c=color,
                    marker=marker,
                    s=60 if marker == "*" else 18,
                    label=label,
                )
        ax.legend(loc="best", fontsize=8)
        ax.set_xlabel(
            "cost per run" if report.get("cost_axis") == "cost" else "latency per run (s)"
        )
        ax.set_ylabel("reward (val)")
        ax.set_title("candidates on the cost/reward plane (val)")
        fig.tight_layout()
        fig.savefig(out / "candidates.png", dpi=100)
        plt.close(fig)
        written.append("candidates.png")
    rounds = report.get("best_per_round") or []
    if rounds:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["round"] for r in rounds], [r["reward"] for r in rounds], "o-", label="reward")
        ax.set_xlabel("round")
        ax.set_ylabel("reward (val)")
        ax2 = ax.twinx()
        key = "cost" if report.get("cost_axis") == "cost" else "latency_s"
        ax2.plot([r["round"] for r in rounds], [r[key] for r in rounds], "s--", color="tab:red")
        ax2.set_ylabel(key + " per run")
        ax.set_title("best per round")
        fig.tight_layout()
        fig.savefig(out / "best_per_round.png", dpi=100)
        plt.close(fig)
        written.append("best_per_round.png")
    steps = report.get("steps") or []
    if steps:
        fig, ax = plt.subplots(figsize=(6, 4))
        names = [s["step"] for s in steps]
        key = "cost_share" if report.get("cost_axis") == "cost" else "latency_per_run_s"
        before = [(s["before"] or {}).get(key, 0) for s in steps]
        after = [(s["after"] or {}).get(key, 0) for s in steps]
        idx = range(len(names))
        ax.bar([i - 0.2 for i in idx], before, 0.4, label="before")
        ax.bar([i + 0.2 for i in idx], after, 0.4, label="after")
        ax.set_xticks(list(idx), names, rotation=30, ha="right")
        ax.set_ylabel(key)
        ax.legend()
        ax.set_title("per-step " + key.replace("_", " "))
        fig.tight_layout()
        fig.savefig(out / "step_share.png", dpi=100)
        plt.close(fig)
        written.append("step_share.png")
    return written
