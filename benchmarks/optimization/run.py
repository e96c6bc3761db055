"""Optimization benchmark on the real local models: baseline vs optimized vs oracle.

    .venv/bin/python benchmarks/optimization/run.py [--quick] [--seed N] [--out DIR]

Runs each family x workflow shape on the held-out test split of generated tasks:

- baseline: every LLM step on the strongest model, the largest ``max_tokens``, first-draft
  prompts (benchmarks/optimization/workflows.py);
- optimized: the winner of ``lightspan train run`` (trained on train+val only), when the
  trainer is installed; otherwise the run says so and reports baseline and oracle only;
- oracle: per task, the cheapest configuration of the search grid (per-step model x
  ``max_tokens``) that reaches the best reward any grid configuration reached.

Prints the table (reward with 95% CI, cost per run under two price tables, latency p50/p95,
% cuts) and writes report.md, results.json and PNG plots to ``--out``. Every (configuration,
task) run is cached on disk (``--cache-dir``), so a rerun only runs what is missing.
``--quick`` (SmolLM2 and Qwen 0.5B, one workflow per family, two tasks) is the CI smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.optimization.oracle import (
    ResultCache,
    RunRecord,
    evaluate,
    evaluate_paired,
    evaluate_specs,
    models_of,
    oracle_choice,
    search_grid,
)
from benchmarks.optimization.prices import (
    CPU_HOUR_USD,
    PUBLIC_SOURCE,
    cpu_price_table,
    measured_prices,
    public_price_table,
)
from benchmarks.optimization.report import (
    HEADERS,
    ArmFigures,
    Cell,
    cut,
    markdown_table,
    paired_diff_ci,
    print_table,
    table_rows,
    write_plots,
)
from benchmarks.optimization.tasks import FAMILIES, Task, generate
from benchmarks.optimization.trainer_seam import (
    TrainerJob,
    price_pairs,
    resources_to_spec_section,
    start_trainer,
    trainer_status,
)
from benchmarks.optimization.workflows import (
    SHAPES,
    VOTE_JOINS,
    Config,
    StepChoice,
    config_key,
    uniform_config,
    workflow_spec,
)

ALL_MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
QUICK_MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b"]
# --quick: one workflow shape per family, so each shape and each family is covered once.
QUICK_PAIRS = [
    ("arithmetic", "vote"),
    ("extraction", "organizer_worker"),
    ("classification", "sequence"),
]
# --quick trains on one workflow only (the trainer's own rollouts dominate a quick run's time):
# the one-LLM-step organizer-worker, so the search has one round (a 3-step sequence has three).
QUICK_TRAINER_PAIRS = [("extraction", "organizer_worker")]
PAIRED_BASELINE = "paired-baseline"
MAJORITY_ARM = "majority join"
"""With ``--vote-join majority``: the baseline's resources on the lazy vote (the workflow edit
alone, without the trainer)."""
"""Config label of the baseline's runs interleaved with the optimized arm's on the test split."""
DEFAULT_CACHE = Path.home() / ".cache" / "lightspan" / "optbench"


APO_OPTIONS = ("beam-rounds", "branch-factor")
"""The trainer's APO options the benchmark passes on, as ``--trainer-<name>``."""


@dataclass(slots=True)
class Settings:
    seed: int
    models: list[str]
    """Weakest first; the last one is the baseline's model."""
    max_tokens: list[int]
    """Grid levels; the largest is the baseline's."""
    tasks: int
    pairs: list[tuple[str, str]]
    concurrency: int
    quick: bool
    keep_servers: bool = False
    """Every model server up for the whole run (and the trainer overlapping the grid); each
    server then gets 8 request slots, for the grid's and the trainer's runs together: decoding
    a small model on one thread is bound by memory bandwidth, so a larger batch is nearly free."""
    trainer_runners: int = 2
    trainer_min_tasks: int = 4
    trainer_models: list[str] | None = None
    """The models the trainer's catalog offers (``--trainer-models``; ``None``: all)."""
    trainer_apo: dict[str, int] = field(default_factory=dict)
    """APO's beam options given (``--trainer-beam-rounds``, ``--trainer-branch-factor``)."""
    slots: int = 1
    """Request slots per model server (see ``--slots``)."""
    repeatable: bool = True
    """Model servers without a prompt cache (see ``--repeatable``)."""
    vote_join: str = "all"
    """The vote's join in the grid, the trainer's workflow and the optimized arm (the baseline
    always runs ``join: all``, the first draft); see ``--vote-join``."""


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="SmolLM2 + 0.5B, few tasks, trainer on one workflow (5-6.5 min on 2 shared cores)",
    )
    p.add_argument("--seed", type=int, default=0, help="task generation seed (default 0)")
    p.add_argument("--tasks", type=int, help="test tasks per family (default 2 quick, 6 full)")
    p.add_argument("--models", help=f"comma list, weakest first (default {','.join(ALL_MODELS)})")
    p.add_argument("--max-tokens", help="comma list of grid levels (default 128,512; quick 48)")
    p.add_argument("--families", help=f"comma list (default {','.join(FAMILIES)})")
    p.add_argument("--shapes", help=f"comma list (default {','.join(SHAPES)})")
    p.add_argument("--concurrency", type=int, help="runs in flight (default 2; quick 4)")
    p.add_argument(
        "--out", type=Path, help="report directory (default benchmarks/optimization/out/<UTC time>)"
    )
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    p.add_argument("--remeasure-prices", action="store_true", help="measure CPU prices again")
    p.add_argument("--no-trainer", action="store_true", help="skip `lightspan train run`")
    p.add_argument(
        "--algorithm",
        default="cost",
        choices=["cost", "apo", "both", "downshift"],
        help="trainer algorithm (default cost); apo, both and downshift: the strongest model "
        "writes APO's critiques and edits",
    )
    p.add_argument(
        "--train-tasks", type=int, help="train+val tasks per family (default 6 quick, 24)"
    )
    p.add_argument(
        "--trainer-max-rollouts", type=int, help="trainer's rollout budget (default: none)"
    )
    p.add_argument(
        "--trainer-repeats",
        type=int,
        default=1,
        help="trainer's runs per (candidate, task), rewards averaged (default 1)",
    )
    p.add_argument(
        "--trainer-runners", type=int, help="trainer's runs in flight (default 4 quick, 2)"
    )
    p.add_argument(
        "--trainer-keep-model-first",
        action="store_true",
        help="the trainer's --keep-model-first: per step, the step's own model (caps, "
        "prompts) before other models",
    )
    p.add_argument(
        "--trainer-models",
        help="comma list of the benchmarked models the trainer's catalog offers (default: all "
        "of --models). Only the baseline's model: the trainer searches caps and prompts on it "
        "and moves no step to another model",
    )
    p.add_argument(
        "--trainer-min-tasks", type=int, help="trainer's first halving rung (default 2 quick, 4)"
    )
    for name in APO_OPTIONS:
        p.add_argument(
            f"--trainer-{name}",
            type=int,
            help=f"apo and both: the trainer's --{name} (default: the trainer's, 2). APO edits "
            "the workflow's prompts in turn, one per branch, so with one round and three "
            "prompts a branch factor of 3 edits each once",
        )
    p.add_argument(
        "--trainer-timeout",
        type=float,
        default=3 * 3600,
        help="seconds after which a trainer still running is stopped (default 3 h; one "
        "family x shape took 44-70 min here, more when other jobs share the cores)",
    )
    p.add_argument(
        "--slots",
        type=int,
        help="request slots per model server (default 1; --keep-servers: 8). One slot makes "
        "temperature-0 answers repeatable: llama.cpp's numerics depend on how requests are "
        "batched, so with several slots the same request can get another answer",
    )
    p.add_argument(
        "--repeatable",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="model servers without a prompt cache (default: with one slot). With the cache a "
        "request's answer depends on the requests served before it (the reused prefix is "
        "evaluated in another batch shape), so the same run in another order, or interleaved "
        "with another arm, can get another answer; runs of either kind are cached apart",
    )
    p.add_argument(
        "--vote-join",
        choices=VOTE_JOINS,
        default="all",
        help="the vote's join for the grid (oracle), the workflow the trainer optimizes and the "
        "optimized arm; the baseline keeps join all. majority: the third branch starts only "
        "when the first two disagree (default all)",
    )
    p.add_argument(
        "--keep-servers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep every model server up and overlap the trainer with the grid (default: quick)",
    )
    args = p.parse_args(argv)

    def csv(value: str | None, default: list[str]) -> list[str]:
        return [x.strip() for x in value.split(",") if x.strip()] if value else default

    models = csv(args.models, QUICK_MODELS if args.quick else ALL_MODELS)
    levels = sorted(int(x) for x in csv(args.max_tokens, ["48"] if args.quick else ["128", "512"]))
    families = csv(args.families, list(FAMILIES))
    shapes = csv(args.shapes, list(SHAPES))
    for f in families:
        if f not in FAMILIES:
            p.error(f"unknown family {f!r}; known: {', '.join(FAMILIES)}")
    for s in shapes:
        if s not in SHAPES:
            p.error(f"unknown workflow shape {s!r}; known: {', '.join(SHAPES)}")
    trainer_models = csv(args.trainer_models, models)
    for m in trainer_models:
        if m not in models:
            p.error(f"--trainer-models: {m!r} is not one of --models ({', '.join(models)})")
    trainer_apo = {
        name: value
        for name in APO_OPTIONS
        if (value := getattr(args, "trainer_" + name.replace("-", "_"))) is not None
    }
    if trainer_apo and args.algorithm == "cost":
        p.error(
            f"--trainer-{next(iter(trainer_apo))} is an APO option: it needs --algorithm apo, "
            "both or downshift"
        )
    for name, value in trainer_apo.items():
        if value < 1:
            p.error(f"--trainer-{name} must be at least 1, got {value}")
    if args.quick and not (args.families or args.shapes):
        pairs = list(QUICK_PAIRS)
    else:
        pairs = [(f, s) for f in families for s in shapes]
    settings = Settings(
        seed=args.seed,
        models=models,
        max_tokens=levels,
        tasks=args.tasks or (2 if args.quick else 6),
        pairs=pairs,
        concurrency=args.concurrency or (4 if args.quick else 2),
        quick=args.quick,
        keep_servers=args.quick if args.keep_servers is None else args.keep_servers,
        trainer_runners=args.trainer_runners or (4 if args.quick else 2),
        trainer_min_tasks=args.trainer_min_tasks or (2 if args.quick else 4),
        trainer_models=trainer_models,
        trainer_apo=trainer_apo,
        vote_join=args.vote_join,
    )
    settings.slots = args.slots or (8 if settings.keep_servers else 1)
    settings.repeatable = settings.slots == 1 if args.repeatable is None else args.repeatable
    return args, settings


def baseline_config(shape: str, s: Settings) -> dict[str, StepChoice]:
    return uniform_config(shape, StepChoice(s.models[-1], s.max_tokens[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.optimization.models import ModelPool
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    args, s = parse_args(argv)
    console = Console(width=max(Console().width, 180))
    started = dt.datetime.now(dt.UTC)
    out = args.out or Path(__file__).parent / "out" / started.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    # Answers from servers with and without a prompt cache differ: never mix them.
    cache = ResultCache(
        args.cache_dir / ("runs-repeatable.jsonl" if s.repeatable else "runs.jsonl")
    )

    test: dict[str, list[Task]] = {}
    trainset: dict[str, list[Task]] = {}
    for family in sorted({f for f, _ in s.pairs}):
        test[family] = generate(family, "test", s.tasks, seed=s.seed)
        n_train = args.train_tasks or (6 if s.quick else 24)
        n_val = max(1, n_train // 3)
        trainset[family] = generate(family, "train", n_train - n_val, seed=s.seed) + generate(
            family, "val", n_val, seed=s.seed
        )

    console.print(f"[bold]prices[/]: measuring CPU-seconds per token (cached in {args.cache_dir})")
    measured = measured_prices(
        s.models, args.cache_dir / "prices.json", remeasure=args.remeasure_prices
    )
    cpu, public = cpu_price_table(measured), public_price_table()

    why_no_trainer = "--no-trainer given" if args.no_trainer else trainer_status()
    if why_no_trainer:
        console.print(
            f"[bold yellow]trainer not available[/]: {why_no_trainer}. "
            "Reporting baseline and oracle only."
        )

    grids: dict[tuple[str, str], list[Config]] = {}
    for family, shape in s.pairs:
        grid = search_grid(shape, s.models, s.max_tokens)
        base = baseline_config(shape, s)
        if config_key(base) not in {config_key(c) for c in grid}:
            grid.append(base)
        grids[(family, shape)] = grid
    # Group the runs by the models they need: single-model groups run with one server up.
    groups: dict[frozenset[str], list[tuple[str, str, Config]]] = {}
    for (family, shape), grid in grids.items():
        for c in grid:
            groups.setdefault(models_of(c), []).append((family, shape, c))
    order = sorted(groups, key=lambda g: (len(g), [s.models.index(m) for m in sorted(g)]))
    total = sum(len(v) * s.tasks for v in groups.values())

    results: dict[tuple[str, str], dict[tuple[str, str], RunRecord]] = {p: {} for p in s.pairs}
    paired: dict[tuple[str, str], dict[str, list[RunRecord]]] = {}
    """Per trained pair: the baseline's and the optimized arm's test runs, interleaved."""
    trainer_reports: dict[str, Any] = {}
    train_pairs: list[tuple[str, str]] = []
    if not why_no_trainer:
        train_pairs = s.pairs
        if s.quick and not (args.families or args.shapes):
            train_pairs = [p for p in s.pairs if p in QUICK_TRAINER_PAIRS]
    jobs: dict[str, TrainerJob] = {}

    def start_jobs(endpoints: dict[str, str]) -> None:
        for family, shape in train_pairs:
            name = f"{family}-{shape}"
            try:
                jobs[name] = start_trainer(
                    family,
                    shape,
                    baseline_config(shape, s),
                    endpoints,
                    trainset[family],
                    price_pairs(cpu, s.models),
                    out / "trainer" / name,
                    algorithm=args.algorithm,
                    seed=s.seed,
                    max_rollouts=args.trainer_max_rollouts,
                    runners=s.trainer_runners,
                    timeout_s=args.trainer_timeout,
                    optimizer_model=s.models[-1],
                    min_tasks=s.trainer_min_tasks,
                    repeats=args.trainer_repeats,
                    keep_model_first=args.trainer_keep_model_first,
                    catalog_models=s.trainer_models,
                    apo=s.trainer_apo,
                    vote_join=s.vote_join,
                )
            except Exception as e:  # reported, the other arms still stand
                trainer_reports[name] = {"error": f"{type(e).__name__}: {e}"}

    with (
        ModelPool(threads=1, parallel=s.slots, repeatable=s.repeatable) as pool,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        bar = progress.add_task("grid runs", total=total)
        if s.keep_servers:
            # Every server up from the start: no restarts between groups, and the trainer
            # runs alongside the grid (its requests share the servers' parallel slots).
            endpoints = pool.ensure(s.models)
            start_jobs(endpoints)
        for group in order:
            progress.update(bar, description=f"grid runs on {'+'.join(sorted(group))}")
            endpoints = pool.ensure(s.models if s.keep_servers else group)
            by_pair: dict[tuple[str, str], list[Config]] = {}
            for family, shape, c in groups[group]:
                by_pair.setdefault((family, shape), []).append(c)
            for (family, shape), configs in by_pair.items():
                results[(family, shape)].update(
                    asyncio.run(
                        evaluate(
                            family,
                            shape,
                            configs,
                            test[family],
                            endpoints,
                            cache,
                            concurrency=s.concurrency,
                            on_done=lambda: progress.advance(bar),
                            vote_join=s.vote_join,
                        )
                    )
                )
        # The baseline is the first draft (join all) whatever the grid's vote join is.
        first_draft: dict[tuple[str, str], dict[tuple[str, str], RunRecord]] = {}
        for family, shape in s.pairs:
            if shape == "vote" and s.vote_join != "all":
                progress.update(bar, description=f"baseline with join all: {family}-{shape}")
                base = baseline_config(shape, s)
                first_draft[(family, shape)] = asyncio.run(
                    evaluate_specs(
                        {
                            config_key(base): workflow_spec(
                                family, shape, base, pool.ensure(s.models)
                            )
                        },
                        test[family],
                        cache,
                        concurrency=s.concurrency,
                    )
                )
        if train_pairs:
            endpoints = pool.ensure(s.models)
            if not s.keep_servers:
                start_jobs(endpoints)
            for name, job in jobs.items():
                progress.update(bar, description=f"waiting for lightspan train run: {name}")
                try:
                    trainer_reports[name] = job.finish()
                except Exception as e:  # reported, the other arms still stand
                    trainer_reports[name] = {"error": f"{type(e).__name__}: {e}"}
            for family, shape in train_pairs:
                name = f"{family}-{shape}"
                rep = trainer_reports.get(name) or {}
                if rep.get("resources"):
                    base_spec = workflow_spec(family, shape, baseline_config(shape, s), endpoints)
                    base_spec["resources"]["id"] = f"{name}:{PAIRED_BASELINE}"
                    spec = workflow_spec(
                        family, shape, baseline_config(shape, s), endpoints, vote_join=s.vote_join
                    )
                    specs = {PAIRED_BASELINE: base_spec, "optimized": spec}
                    if shape == "vote" and s.vote_join != "all":
                        specs[MAJORITY_ARM] = copy.deepcopy(spec)
                        specs[MAJORITY_ARM]["resources"]["id"] = f"{name}:{MAJORITY_ARM}"
                    spec["resources"] = resources_to_spec_section(
                        rep["resources"], f"{name}:optimized"
                    )
                    progress.update(
                        bar, description=f"test split, baseline and optimized interleaved: {name}"
                    )
                    runs = asyncio.run(
                        evaluate_paired(
                            specs,
                            test[family],
                            cache,
                            stamp=started.strftime("%Y%m%dT%H%M%SZ"),
                        )
                    )
                    paired[(family, shape)] = {
                        label: [runs[(label, t.id)] for t in test[family]] for label in specs
                    }

    cells: list[Cell] = []
    for family, shape in s.pairs:
        res = results[(family, shape)]
        tasks = test[family]
        base_key = config_key(baseline_config(shape, s))
        base_runs = [first_draft.get((family, shape), res)[(base_key, t.id)] for t in tasks]
        arms = {"baseline": ArmFigures.of("baseline", base_runs, cpu, public, s.seed)}
        if (family, shape) in first_draft:  # the grid's baseline resources on the lazy vote
            lazy = [res[(base_key, t.id)] for t in tasks]
            arms[MAJORITY_ARM] = ArmFigures.of(MAJORITY_ARM, lazy, cpu, public, s.seed)
        if (family, shape) in paired:
            # Baseline and optimized from the same interleaved test runs (same load).
            runs = paired[(family, shape)]
            arms = {
                "baseline": ArmFigures.of("baseline", runs[PAIRED_BASELINE], cpu, public, s.seed)
            }
            if MAJORITY_ARM in runs:
                lazy = runs[MAJORITY_ARM]
                arms[MAJORITY_ARM] = ArmFigures.of(MAJORITY_ARM, lazy, cpu, public, s.seed)
            arms["optimized"] = ArmFigures.of("optimized", runs["optimized"], cpu, public, s.seed)
        chosen = oracle_choice(res, grids[(family, shape)], tasks, cpu)
        oracle_runs = [chosen[t.id] for t in tasks if t.id in chosen]
        arms["oracle"] = ArmFigures.of("oracle", oracle_runs, cpu, public, s.seed)
        cells.append(
            Cell(family, shape, arms, reward_diff_ci=paired_diff_ci(base_runs, oracle_runs, s.seed))
        )
    print_table(cells, console)
    write_report(
        out, s, args, cells, measured, why_no_trainer, trainer_reports, grids, started, paired
    )
    console.print(f"report: {out / 'report.md'}")
    return 0


def goal_lines(
    cells: list[Cell], paired: dict[tuple[str, str], dict[str, list[RunRecord]]]
) -> list[str]:
    """Per trained pair, issue 11's goal checked on the interleaved test runs: cost cut >= 30 %,
    p50 cut >= 15 %, one-sided 95 % paired-bootstrap lower bound of the reward difference
    >= -0.02 (the trainer's own rule), optimized cost within 10 % of the oracle's."""
    from lightspan.trainer.evaluation.stats import paired_bootstrap_lower, paired_changes

    lines = []
    for c in cells:
        runs = paired.get((c.family, c.shape))
        if not runs or "optimized" not in c.arms:
            continue
        b, o, orc = c.arms["baseline"], c.arms["optimized"], c.arms["oracle"]
        pairs = paired_runs(runs[PAIRED_BASELINE], runs["optimized"])
        opt_rewards = [run_o.reward for _, run_o in pairs]
        base_rewards = [run_b.reward for run_b, _ in pairs]
        lb = paired_bootstrap_lower(opt_rewards, base_rewards)
        lower, higher = paired_changes(opt_rewards, base_rewards)
        checks = {
            "cost cut >= 30%": cut(b.cost_per_run, o.cost_per_run) >= 30,
            "p50 cut >= 15%": cut(b.latency_p50_s, o.latency_p50_s) >= 15,
            "reward lower bound >= -0.02": lb >= -0.02,
            "within 10% of the oracle's cost": o.cost_per_run <= 1.1 * orc.cost_per_run,
        }
        lines.append(
            f"- {c.family} x {c.shape}: cost cut {cut(b.cost_per_run, o.cost_per_run):+.0f}% "
            f"(public table {cut(b.cost_per_run_public, o.cost_per_run_public):+.0f}%), "
            f"p50 cut {cut(b.latency_p50_s, o.latency_p50_s):+.0f}%, "
            f"p95 cut {cut(b.latency_p95_s, o.latency_p95_s):+.0f}%, reward "
            f"{o.reward_mean:.2f} vs {b.reward_mean:.2f} (lower bound of the difference "
            f"{lb:+.3f}; lower on {lower} and higher on {higher} of {len(runs['optimized'])} "
            f"tasks), optimized cost / oracle cost {o.cost_per_run / orc.cost_per_run:.2f}; "
            + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items())
        )
    return lines


def paired_runs(
    baseline: Sequence[RunRecord], optimized: Sequence[RunRecord]
) -> list[tuple[RunRecord, RunRecord]]:
    """The test runs as (baseline, optimized) pairs, refusing a pair of two different tasks
    (counts and rewards of unpaired runs would be read as the winner's effect)."""
    pairs = list(zip(baseline, optimized, strict=True))
    for b, o in pairs:
        if b.task_id != o.task_id:
            raise ValueError(f"unpaired runs: baseline {b.task_id} against optimized {o.task_id}")
    return pairs


def paired_rewards(
    paired: dict[tuple[str, str], dict[str, list[RunRecord]]],
) -> dict[str, list[dict[str, Any]]]:
    """Per trained pair, each test task's baseline and optimized reward (results.json), so a
    reader can see which answers a winner changed without the run cache."""
    return {
        f"{family}x{shape}": [
            {"task_id": b.task_id, "baseline": b.reward, "optimized": o.reward}
            for b, o in paired_runs(runs[PAIRED_BASELINE], runs["optimized"])
        ]
        for (family, shape), runs in paired.items()
    }


def trainer_lines(cells: list[Cell], reports: dict[str, Any]) -> list[str]:
    """Per workflow: the trainer's decision, its own spend, and the runs it takes to pay off."""
    lines = []
    by_name = {f"{c.family}-{c.shape}": c for c in cells}
    for name, rep in reports.items():
        if "error" in rep:
            lines.append(f"- {name}: FAILED: {rep['error']}")
            continue
        spend = rep.get("trainer_spend") or {}
        total = float(spend.get("total_cost") or 0.0)
        line = (
            f"- {name}: status {rep.get('status')}; split {rep.get('split')}; decision: "
            f"{rep.get('decision')}; trainer spend {total * 1e6:.0f} µUSD over "
            f"{spend.get('rollouts')} rollouts in {float(rep.get('elapsed_s') or 0):.0f} s "
            "(priced with the CPU table, given to it as its catalog)"
        )
        cell = by_name.get(name)
        if rep.get("held_on_test") is False and cell and MAJORITY_ARM in cell.arms:
            line += (
                "; the resources it returned are the baseline's: the optimized arm is the "
                f"baseline's resources on the lazy vote, as the {MAJORITY_ARM!r} arm (the gap "
                "between those two rows is run-to-run noise)"
            )
        elif rep.get("held_on_test") is False:
            line += (
                "; the resources it returned (and the optimized arm) are the baseline's, "
                "re-run: the gap between those two rows is run-to-run noise"
            )
        chosen = next((f for f in rep.get("fallbacks") or [] if f.get("chosen")), None)
        if chosen is not None:
            line += f"; adopted in the winner's place: {chosen['label']}"
        if rep.get("held_on_test") is False:
            pass  # nothing adopted: a "saving" between two runs of one set is noise
        elif cell and "optimized" in cell.arms:
            saved = cell.arms["baseline"].cost_per_run - cell.arms["optimized"].cost_per_run
            line += (
                f"; pays for itself after {total / saved:.0f} runs"
                if saved > 0
                else "; saves nothing per run on the test split, so it never pays for itself"
            )
        lines.append(line)
    if reports:
        lines.append(
            "- note: on the test split the baseline and the optimized arm ran interleaved, one "
            "run at a time, paired per task with the order alternating, in the same time "
            "window; the oracle's runs are the grid's (measured earlier, a few runs in flight)."
        )
    return lines


def write_report(
    out: Path,
    s: Settings,
    args: argparse.Namespace,
    cells: list[Cell],
    measured: dict[str, Any],
    why_no_trainer: str | None,
    trainer_reports: dict[str, Any],
    grids: dict[tuple[str, str], list[Config]],
    started: dt.datetime,
    paired: dict[tuple[str, str], dict[str, list[RunRecord]]],
) -> None:
    plots = write_plots(cells, out)
    cmd = "python benchmarks/optimization/run.py " + " ".join(sys.argv[1:])
    price_rows = [
        [
            m,
            f"{x.cpu_s_per_input_token * 1e3:.2f}",
            f"{x.cpu_s_per_output_token * 1e3:.2f}",
            f"{x.price().input:.3f}",
            f"{x.price().output:.3f}",
            f"{x.date} (load {x.loadavg_1m:.1f}, {x.threads} thread)",
        ]
        for m, x in measured.items()
    ]
    agg = []
    for c in cells:
        o = c.arms["oracle"]
        agg.append(
            f"- {c.family} x {c.shape}: oracle reward - baseline reward, paired 95% CI "
            f"[{c.reward_diff_ci[0]:+.2f}, {c.reward_diff_ci[1]:+.2f}]; oracle configurations "
            f"chosen: {', '.join(f'{k} ({v})' for k, v in sorted(o.configs.items()))}; "
            f"baseline (grid): {config_key(baseline_config(c.shape, s))}"
            if c.reward_diff_ci
            else ""
        )
    lines = [
        "# Optimization benchmark (issue 11)",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, shared (load average at the end "
        f"{os.getloadavg()[0]:.1f}); command: `{cmd}`",
        f"- seed: {s.seed}; test tasks per family: {s.tasks}; models (weakest first): "
        f"{', '.join(s.models)}; max_tokens grid: {s.max_tokens}; runs in flight: "
        f"{s.concurrency}; request slots per model server: {s.slots}"
        f"{' (no prompt cache: repeatable answers)' if s.repeatable else ''}; trainer runs per "
        f"(candidate, task): {args.trainer_repeats}",
        f"- baseline: every LLM step on {s.models[-1]} with max_tokens {s.max_tokens[-1]}, "
        "first-draft prompts (benchmarks/optimization/workflows.py)",
        "- oracle: per task, the cheapest grid configuration (CPU price table) reaching the "
        "best reward of the grid; grid sizes: "
        + ", ".join(f"{f}x{sh} {len(g)}" for (f, sh), g in grids.items()),
        "- optimized: "
        + (
            f"NOT RUN: {why_no_trainer}"
            if why_no_trainer
            else f"`lightspan train run --algorithm {args.algorithm}"
            + "".join(f" --{k} {v}" for k, v in s.trainer_apo.items())
            + "` on train+val tasks, "
            "its winner measured here on the test split"
        ),
        "",
        "## Results (test split)",
        "",
        "Cost per run in micro-USD (µUSD). Cuts are relative to the baseline (positive = "
        "cheaper / faster). Latency is wall time per run with the runs in flight shown above.",
        "",
        markdown_table(HEADERS, table_rows(cells)),
        "",
        *[a for a in agg if a],
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
        "## Price tables",
        "",
        f"1. CPU (measured here, `benchmarks/optimization/prices.py`): CPU-seconds of the model "
        f"server per token x USD {CPU_HOUR_USD} per CPU-hour.",
        "",
        markdown_table(
            [
                "model",
                "CPU ms / input token",
                "CPU ms / output token",
                "USD / 1M input",
                "USD / 1M output",
                "measured",
            ],
            price_rows,
        ),
        "",
        f"2. Public: {PUBLIC_SOURCE}.",
        "",
        "## Trainer",
        "",
        *(trainer_lines(cells, trainer_reports) or [f"- not run: {why_no_trainer}"]),
        "",
        "## Goal (issue 11) on the test split",
        "",
        *(goal_lines(cells, paired) or ["- no trained workflow: nothing to check"]),
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(
        json.dumps(
            {
                "settings": asdict(s),
                "cells": [asdict(c) for c in cells],
                "prices": {m: asdict(x) for m, x in measured.items()},
                "trainer": trainer_reports or why_no_trainer,
                "paired_test_rewards": paired_rewards(paired),
                "date": started.isoformat(),
            },
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
