"""``downshift``: the costliest LLM step moved to the catalog's cheapest model, then APO
rewrites the prompts for that model; the result is kept only if it holds the baseline's
reward on val and costs less.

Why: the lever with headroom on the organizer-worker is the 0.5B worker (about half the
cost), and with the first-draft prompt it loses reward (extraction, docs/performance.md 1m and
1o: lower bound -0.17 on val). The cost search takes prompts as they are (or with a "be
concise" suffix), and APO from the baseline tunes them for the model the baseline runs. Here
APO's critic reads the cheap model's own failures, so its edits aim at them.
"""

from __future__ import annotations

from collections.abc import Callable

from lightspan.trainer.data import Task
from lightspan.trainer.evaluation.evaluate import Evaluator, Result
from lightspan.trainer.evaluation.stats import paired_bootstrap_lower
from lightspan.trainer.resmap import LLMStep, ResourcesMap, step_resource, with_step_resource
from lightspan.trainer.search.cost import (
    ModelOption,
    calls_cost,
    figures,
    on_model,
    step_calls,
    step_order,
)


def downshift(
    baseline: ResourcesMap,
    steps: list[LLMStep],
    results: list[Result],
    catalog: list[ModelOption],
    price: Callable[[str], tuple[float, float] | None],
) -> tuple[str, ResourcesMap] | None:
    """The baseline with its costliest step (in ``results``, the baseline's runs) that has a
    cheaper catalog model moved to the cheapest one, priced on that step's calls, and a
    label saying so; ``None`` when no step has a cheaper model in the catalog."""
    for step in step_order(steps, results):
        calls, _ = step_calls(step, results, [])
        llm = step_resource(baseline, step.llm, step.name)
        here = calls_cost(calls, price(llm["model"]))
        priced = [(calls_cost(calls, price(m.model)), m) for m in catalog]
        cheaper = [(c, m) for c, m in priced if c is not None and (here is None or c < here)]
        if not cheaper:
            continue
        _, m = min(cheaper, key=lambda cm: cm[0])
        moved = with_step_resource(baseline, step.llm, step.name, on_model(llm, m))
        return f"{step.name}: model={m.model}", moved
    return None


async def holds_on_val(
    evaluator: Evaluator,
    baseline: ResourcesMap,
    candidate: ResourcesMap,
    val: list[Task],
    *,
    delta: float,
    seed: int = 0,
) -> tuple[bool, str]:
    """Whether ``candidate`` keeps the baseline's reward on val (paired bootstrap lower bound
    of the difference >= -``delta``) and costs less, with a note giving the figures."""
    base = await evaluator.evaluate(baseline, val)
    cand = await evaluator.evaluate(candidate, val)
    lb = paired_bootstrap_lower([r.reward for r in cand], [r.reward for r in base], seed=seed)
    (b_reward, b_cost, _), (c_reward, c_cost, _) = figures(base), figures(cand)
    said = f"reward {c_reward:.3f} vs the baseline's {b_reward:.3f} on val (lower bound {lb:+.3f})"
    if b_cost:
        said += f", cost {c_cost / b_cost - 1:+.0%}"
    if lb < -delta:
        return False, f"{said}: below -{delta}"
    if not c_cost < b_cost:
        return False, f"{said}: not cheaper"
    return True, said
