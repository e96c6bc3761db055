"""One training run: split, measure the baseline, search, confirm on test, report, publish.

Why confirm on the held-out test split: the search picks the best of many candidates on val,
so its val figures are optimistic; only a winner whose paired-bootstrap lower bound on test is
>= -delta, and that is cheaper (or faster), may be published. Fallbacks are fixed before test:
the winner routed (inputs longer than every train or val input shorter than one a cheaper set
lost stay on the baseline's resources, :mod:`lightspan.trainer.evaluation.route`), then the
sets the search accepted on its way to the winner, latest first. All face the gate, each at
``1/k`` of the error rate for ``k`` sets (Bonferroni), and the first that holds is published:
the winner when it holds, else the first fallback that does. Anything else, including Ctrl-C
or a budget running out, writes a partial report and leaves the
published set alone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightspan.trainer.data import Task, split_tasks
from lightspan.trainer.evaluation.evaluate import Evaluator, Result
from lightspan.trainer.evaluation.route import Route, compose, fit_route, routed_resources
from lightspan.trainer.evaluation.stats import paired_bootstrap_lower, paired_changes
from lightspan.trainer.report import step_table, summarize, write_markdown, write_plots
from lightspan.trainer.resmap import ResourcesMap, digest, llm_steps
from lightspan.trainer.search.cost import Candidate, CostSearch, ModelOption, SearchOutcome


class BudgetExhausted(RuntimeError):
    """The rollout budget ran out before the search could decide."""


@dataclass(slots=True)
class TrainOptions:
    algorithm: str = "cost"
    delta: float = 0.02
    seed: int = 0
    val_fraction: float = 0.3
    test_fraction: float = 0.3
    min_tasks: int = 4
    max_rollouts: int | None = None
    prompt_variants: bool = True
    confirm_on_train: bool = True
    """cost: a step's winner must hold on val and train pooled (``cost.py``), not val alone."""
    keep_model_first: bool = False
    """cost: try a step's own model (caps, prompt variants) before the catalog's other models."""
    model_swap_below: float = 0.10
    """cost, with ``keep_model_first``: the other models are tried too when the winner on the
    step's own model saved less than this fraction of the val cost."""
    apo: dict[str, Any] = field(default_factory=dict)
    cost_lambda: float = 0.0
    route: bool = True
    """Offer the winner routed (long inputs on the baseline) as the first fallback."""


class Budgeted(Evaluator):
    """Wraps an evaluator; refuses work beyond ``max_rollouts`` fresh runs. ``on_run`` is told
    of every run made through it (the trainer's "rollouts" progress)."""

    def __init__(
        self,
        inner: Evaluator,
        max_rollouts: int | None,
        on_run: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(inner.workflow_name)
        self.inner = inner
        self.spend = inner.spend
        self.max_rollouts = max_rollouts
        self.on_run = on_run

    async def evaluate(
        self, resources: ResourcesMap, tasks: list[Task], *, progress=None, runs=None
    ):  # type: ignore[no-untyped-def]
        before = self.inner.spend.rollouts
        if self.max_rollouts is not None and before >= self.max_rollouts:
            raise BudgetExhausted(f"rollout budget of {self.max_rollouts} used up")
        return await self.inner.evaluate(
            resources, tasks, progress=progress, runs=runs or self.on_run
        )


LEVEL = 0.95
"""Confidence of the test gate's lower bounds, shared by the sets it tests (Bonferroni)."""


def _decide(
    base: list[Result],
    opt: list[Result],
    options: TrainOptions,
    level: float = LEVEL,
    name: str = "the winner",
) -> tuple[bool, str, float]:
    """Did the winner hold on test? Its reward lower bound (at ``level``) must be >= -delta,
    and it must be cheaper (equal cost: faster, task by task); for apo/both a higher
    ``reward - lambda*cost`` also counts."""
    delta = options.delta
    lb = paired_bootstrap_lower(
        [r.reward for r in opt], [r.reward for r in base], level=level, seed=options.seed
    )
    b, o = summarize(base), summarize(opt)
    if all(not r.ok for r in opt):
        return False, "every run of the winner failed on test", lb
    if lb < -delta:
        return (
            False,
            f"reward lower bound {lb:.3f} on test is below -{delta} ({_tally(base, opt, name)})",
            lb,
        )
    same_cost = abs(o["cost_per_run"] - b["cost_per_run"]) <= 1e-12
    saves = o["cost_per_run"] < b["cost_per_run"] and not same_cost
    # At equal cost, "faster" must hold task by task (paired lower bound of the latency gain
    # > 0): equal cost usually means the same outputs, and a lower p50 of the same outputs is
    # chance half the time.
    faster = (
        same_cost
        and paired_bootstrap_lower(
            [r.latency_s for r in base], [r.latency_s for r in opt], level=level, seed=options.seed
        )
        > 0
    )
    lam = options.cost_lambda
    better = options.algorithm in ("apo", "both") and (
        o["reward_mean"] - lam * o["cost_per_run"] > b["reward_mean"] - lam * b["cost_per_run"]
    )
    if not (saves or faster or better):
        return False, "on test it is neither cheaper nor faster (nor better, for apo)", lb
    why = "cheaper" if saves else "faster" if faster else "better"
    return True, f"held on test: {why}, reward lower bound {lb:.3f} >= -{delta}", lb


def _tally(base: list[Result], opt: list[Result], name: str = "the winner") -> str:
    """Where the winner's test reward differs from the baseline's, task by task.

    Why in the refusal: one lost task of 11 0/1 rewards puts the bound at -0.27, far below
    -delta (docs/performance.md 1c); the counts tell that from a change that is worse."""
    lower, higher = paired_changes([r.reward for r in opt], [r.reward for r in base])
    return f"{name} scored lower on {lower} and higher on {higher} of {len(base)} test tasks"


async def measure_test(
    evaluator: Evaluator,
    sets: list[ResourcesMap],
    tasks: list[Task],
    progress: Callable[[int], None] | None = None,
) -> list[list[Result]]:
    """The test runs of each set (the baseline first, then the winner and its fallbacks),
    scored together (one time window); equal sets are run once.

    Why together: measured one after the other, a change of the machine's load between the
    two windows shows up as a latency difference on every task, which a paired test then
    takes for a real one ("faster" at equal cost). Scored together, the runs of all sets
    share the evaluator's slots and the load they see."""
    unique: list[ResourcesMap] = []
    for res in sets:
        if res not in unique:
            unique.append(res)
    runs = await asyncio.gather(
        *(evaluator.evaluate(res, tasks, progress=progress) for res in unique)
    )
    return [runs[unique.index(res)] for res in sets]


def _gate(
    base: list[Result],
    tried: list[tuple[str, list[Result]]],
    options: TrainOptions,
) -> tuple[int | None, str, float]:
    """The test gate over the winner and its fallbacks: the index of the first of ``tried``
    that held (``None``: none did), the decision, and the reward lower bound of the set chosen
    (none chosen: of the winner).

    Each is tested at ``1 - (1 - LEVEL) / k`` for ``k`` sets tried (Bonferroni), so the chance
    that a worse set passes stays within ``1 - LEVEL`` though several were tested; for a set
    that loses no task the bound is 0 at any level."""
    level = 1 - (1 - LEVEL) / len(tried)
    whys, bounds = [], []
    for i, (name, runs) in enumerate(tried):
        held, why, lb = _decide(base, runs, options, level, name)
        whys.append(why if i == 0 else f"{name}: {why}")
        bounds.append(lb)
        if held:
            return i, "; ".join(whys), lb
    return None, "; ".join(whys), bounds[0]


async def train(
    *,
    evaluator: Evaluator,
    workflow: Any,
    baseline: ResourcesMap,
    tasks: list[Task],
    catalog: list[ModelOption],
    price: Callable[[str], tuple[float, float] | None],
    options: TrainOptions,
    out: Path,
    optimizer: Any = None,
    on_progress: Callable[[str, int], None] | None = None,
    publish: Callable[[ResourcesMap], Any] | None = None,
    history: list[Result] | None = None,
) -> dict[str, Any]:
    """Run the search and write ``out/report.json``, ``report.md`` and plots.

    ``history``: stored production runs of the workflow; their calls join the train runs'
    in the cost search's step order and output-length statistics (max_tokens caps)."""
    _prepare(out)
    split = split_tasks(
        tasks, seed=options.seed, val=options.val_fraction, test=options.test_fraction
    )
    tick = on_progress or (lambda kind, n: None)
    ev = Budgeted(evaluator, options.max_rollouts, on_run=lambda n: tick("run", n))
    candidates: list[Candidate] = []
    report: dict[str, Any] = {
        "workflow": workflow.name,
        "algorithm": options.algorithm,
        "split": split.sizes(),
        "seed": options.seed,
        "delta": options.delta,
        "repeats": evaluator.repeats,
        "status": "running",
        "published": None,
        "decision": None,
        "baseline": None,
        "optimized": None,
        "steps": [],
        "resources": None,
        "notes": [],
        "cost_axis": "cost",
    }
    t0 = time.time()
    outcome = SearchOutcome(best=baseline)
    if history:
        report["notes"].append(f"{len(history)} stored production run(s) used for statistics")

    def on_cand(c: Candidate) -> None:
        candidates.append(c)
        tick("candidate", 1)

    status = "completed"
    try:
        base_train = await ev.evaluate(baseline, split.train)
        if all(not r.ok for r in base_train):
            raise RuntimeError(
                f"every baseline run failed on the train split; first error: {base_train[0].error}"
            )
        best = baseline
        apo_seed = baseline
        if options.algorithm == "downshift":
            from lightspan.trainer.search.downshift import downshift

            moved = downshift(baseline, llm_steps(workflow), base_train, catalog, price)
            if moved is None:
                outcome.notes.append("downshift: no step has a cheaper model in the catalog")
            else:
                outcome.notes.append(f"downshift: {moved[0]}, then apo on its prompts")
                apo_seed = moved[1]
        if options.algorithm in ("apo", "both") or apo_seed is not baseline:
            from lightspan.trainer.search.apo import APOSearch

            if optimizer is None:
                raise RuntimeError(
                    "the apo algorithm needs an optimizer LLM (--optimizer-endpoint)"
                )
            apo = APOSearch(
                ev,
                optimizer,
                on_candidate=on_cand,
                seed=options.seed,
                cost_lambda=options.cost_lambda,
                **options.apo,
            )
            try:
                apo_out = await apo.run(apo_seed, split.train, split.val)
            finally:
                outcome.notes.extend(apo.outcome.notes)
                outcome.best_per_round.extend(apo.outcome.best_per_round)
            best = apo_out.best
        if apo_seed is not baseline:
            from lightspan.trainer.search.downshift import holds_on_val

            held, said = await holds_on_val(
                ev, baseline, best, split.val, delta=options.delta, seed=options.seed
            )
            outcome.notes.append(f"downshift: {said}" + ("" if held else "; baseline kept"))
            best = best if held else baseline
        if options.algorithm in ("cost", "both"):
            search = CostSearch(
                ev,
                llm_steps(workflow),
                catalog=catalog,
                price=price,
                delta=options.delta,
                min_tasks=options.min_tasks,
                seed=options.seed,
                prompt_variants=options.prompt_variants,
                keep_model_first=options.keep_model_first,
                model_swap_below=options.model_swap_below,
                on_candidate=on_cand,
            )
            res = await search.run(
                best,
                split.val,
                base_train + list(history or []),
                train=split.train if options.confirm_on_train else None,
                reference=baseline,
            )
            outcome.notes.extend(res.notes)
            offset = len(outcome.best_per_round)
            outcome.best_per_round.extend(
                {**r, "round": r["round"] + offset} for r in res.best_per_round
            )
            outcome.fallbacks = list(res.fallbacks)
            if best != baseline and res.best != best:  # `both`: apo's prompts came first
                outcome.fallbacks.append(("apo: the prompts it found", best))
            best = res.best
        outcome.best = best
    except BudgetExhausted as e:
        status = "budget_exhausted"
        report["notes"].append(f"{e}: the search stopped before deciding")
    except (KeyboardInterrupt, asyncio.CancelledError):
        status = "interrupted"
        report["notes"].append("interrupted (Ctrl-C): partial report, nothing published")
    except Exception as e:
        status = "failed"
        report["notes"].append(f"{type(e).__name__}: {e}")
        report["error"] = f"{type(e).__name__}: {e}"

    if status == "completed" and evaluator.interrupted:
        status = "interrupted"
        report["notes"].append("interrupted (Ctrl-C): partial report, nothing published")
    report["notes"].extend(outcome.notes)
    report["candidates"] = [c.as_dict() for c in candidates]
    report["best_per_round"] = outcome.best_per_round
    if not any(c.cost for c in candidates) and any(c.latency_s for c in candidates):
        report["cost_axis"] = "latency"
    route: Route | None = None
    if status == "completed" and outcome.best != baseline and options.route:
        route = _fit_route(evaluator, baseline, split.train + split.val, report)
        if route is not None:
            label = f"the winner, inputs over {route.max_chars} characters on the baseline"
            outcome.fallbacks.insert(0, (label, routed_resources(outcome.best, baseline, route)))
    if status == "completed":
        try:
            # Test split: measured once for the baseline, the winner and its fallbacks (fresh
            # runs are not re-budgeted: the decision needs them all); the routed winner's
            # runs are the winner's and the baseline's, composed.
            keys = ["winner"] + [f"fallback {k}" for k in range(1, len(outcome.fallbacks) + 1)]
            kinds = ["routed" if route and k == 0 else "accepted" for k in range(len(keys) - 1)]
            tried = [("the winner", outcome.best)] + [
                (f"{key} ({label})" if kind == "routed" else f"{key} (accepted up to {label})", res)
                for key, kind, (label, res) in zip(keys[1:], kinds, outcome.fallbacks, strict=True)
            ]
            measured = [res for i, (_, res) in enumerate(tried) if not (route and i == 1)]
            base_test, *tried_test = await measure_test(
                evaluator, [baseline, *measured], split.test, lambda n: tick("run", n)
            )
            if route is not None:
                tried_test.insert(1, compose(tried_test[0], base_test, split.test, route))
            report["baseline"] = summarize(base_test)
            # Task by task, so a reader can tell which tasks a refused set lost.
            report["test_rewards"] = {
                "task": [r.task_id for r in base_test],
                "baseline": [r.reward for r in base_test],
                **{
                    key: [r.reward for r in runs]
                    for key, runs in zip(keys, tried_test, strict=True)
                },
            }
            chosen, chosen_test = outcome.best, tried_test[0]
            if outcome.best == baseline:
                report["decision"] = "no change beat the baseline; baseline kept"
                held = False
            else:
                runs = [(name, r) for (name, _), r in zip(tried, tried_test, strict=True)]
                which, why, lb = _gate(base_test, runs, options)
                held = which is not None
                if which is not None:
                    chosen, chosen_test = tried[which][1], tried_test[which]
                report["decision"] = why
                report["test_reward_lower_bound"] = lb
            if outcome.fallbacks:
                # Every set's test figures, whichever was chosen: what each later change added.
                report["winner"] = summarize(tried_test[0])
                report["fallbacks"] = [
                    {
                        "label": label,
                        "kind": kind,
                        "summary": summarize(runs),
                        "chosen": held and chosen is res,
                    }
                    for kind, (label, res), runs in zip(
                        kinds, outcome.fallbacks, tried_test[1:], strict=True
                    )
                ]
            report["optimized"] = summarize(chosen_test)
            report["steps"] = step_table(base_test, chosen_test)
            report["held_on_test"] = held
            report["resources"] = chosen if held else baseline
            if held and publish is not None and not evaluator.interrupted:
                report["published"] = await publish(chosen)
        except (KeyboardInterrupt, asyncio.CancelledError):
            status = "interrupted"
            report["notes"].append("interrupted (Ctrl-C) on test: nothing published")
    report["status"] = status
    report["trainer_spend"] = evaluator.spend.as_dict()
    report["elapsed_s"] = time.time() - t0
    _write(out, report)
    return report


def _fit_route(
    evaluator: Evaluator, baseline: ResourcesMap, tasks: list[Task], report: dict[str, Any]
) -> Route | None:
    """The route fitted on every train and val result the search settled (never a test
    one: the test split has not run yet); ``report["route"]`` says what it is or why none."""
    by_set = evaluator.results_by_set()
    base = by_set.pop(digest(baseline), {})
    route, why = fit_route(base, by_set, tasks)
    report["route"] = {"why": why, **(route.as_dict() if route else {"max_chars": None})}
    return route


def _prepare(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)


def _write(out: Path, report: dict[str, Any]) -> None:
    """report.json, report.md and the plots (their names listed in report.json)."""
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    write_markdown(report, out / "report.md")
    report["plots"] = write_plots(report, out)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
