"""The ``cost`` algorithm: per LLM step, the cheapest (model, max_tokens, prompt variant) that
keeps the reward, decided on val with successive halving and a paired bootstrap.

Why per step, most expensive first: steps differ in how much model they need, and the first
accepted change on the step that dominates the bill is worth more than any later one. Why two
paired-bootstrap lower bounds, both >= -delta: against the *baseline*, so accepted changes
cannot drift the reward down by ``delta`` at each step; and against the *current* set (the one
the change modifies), so a change cannot spend what an earlier one gained. With the baseline
alone, a step-2 change that lost a task to the step-1 winner still passed when the step-1
winner had gained one (seed 0 of classification x sequence: plan concise 1.00 on val, then
solve on Qwen 0.5B 0.89 = the baseline's 0.89, accepted, and the combination lost on test).

Why a step's winner is confirmed on val *and* train (``train=``) before it is accepted: the
search picks the cheapest of a dozen candidates that held on val, so on a small val split it
picks the one that was lucky there. Seed 1 of classification x sequence: solve on Qwen 0.5B lost
no task of the 11 val tasks, then 2 of the 11 test tasks (0.73 vs 0.91), and the trainer's test
gate refused the whole winner. The train split's tasks are seen by no choice of the search (they
give step order and output lengths), so the winner's runs on them are fresh evidence; both lower
bounds must hold on val and train pooled. A winner that fails there retires, for the step, the
candidates of its model and prompt that cannot do better (``_retires``: no larger cap, or any
cap when its cap cut no text) and halving runs again over the rest, its earlier runs from the
evaluator's cache (at most ``max_confirmations`` confirmations per step).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightspan.trainer.data import Task
from lightspan.trainer.evaluation.evaluate import CallRecord, Evaluator, Result
from lightspan.trainer.evaluation.stats import mean, paired_bootstrap_lower, quantile
from lightspan.trainer.resmap import (
    LLMStep,
    ResourcesMap,
    step_resource,
    with_step_resource,
)


@dataclass(frozen=True, slots=True)
class ModelOption:
    """One entry of the model catalog: an endpoint serving a model (prices come separately)."""

    endpoint: str
    model: str
    api_key: str | None = None


def on_model(llm: dict[str, Any], m: ModelOption) -> dict[str, Any]:
    """An LLM resource moved to the catalog entry ``m`` (its endpoint, model and key)."""
    moved = {**llm, "endpoint": m.endpoint, "model": m.model}
    if m.api_key is not None:
        moved["api_key"] = m.api_key
    return moved


@dataclass(slots=True)
class Candidate:
    """A resource set the search evaluated, with its figures on the tasks it saw."""

    label: str
    resources: ResourcesMap
    round: int
    step: str | None
    tasks: int = 0
    reward: float = 0.0
    cost: float = 0.0
    latency_s: float = 0.0
    lower_bound: float | None = None
    """Paired-bootstrap lower bound of the reward difference against the baseline."""
    step_lower_bound: float | None = None
    """The same against the current set (the one this candidate changes one step of)."""
    accepted: bool = False
    advanced: bool = False
    """Successive halving kept it for a larger rung (its later evaluation is another entry)."""
    rejected_because: str | None = None
    truncated: int = 0
    """Runs in which its step's text stopped at ``max_tokens`` (``finish_reason=length``)."""

    def worst_bound(self) -> float:
        """The lower of its two bounds (-inf before it was scored)."""
        if self.lower_bound is None:
            return -math.inf
        if self.step_lower_bound is None:
            return self.lower_bound
        return min(self.lower_bound, self.step_lower_bound)

    def holds(self, delta: float) -> bool:
        """Both lower bounds (baseline, current set) are >= -delta."""
        return self.worst_bound() >= -delta

    def why_not_held(self, delta: float) -> str:
        lb = self.lower_bound
        if lb is None or lb < -delta:
            return f"lower bound {lb if lb is not None else float('nan'):.3f} < -{delta}"
        return f"lower bound against the current set {self.step_lower_bound:.3f} < -{delta}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "round": self.round,
            "step": self.step,
            "tasks": self.tasks,
            "reward": self.reward,
            "cost": self.cost,
            "latency_s": self.latency_s,
            "lower_bound": self.lower_bound,
            "step_lower_bound": self.step_lower_bound,
            "accepted": self.accepted,
            "advanced": self.advanced,
            "rejected_because": self.rejected_because,
            "truncated": self.truncated,
        }


@dataclass(slots=True)
class SearchOutcome:
    best: ResourcesMap
    candidates: list[Candidate] = field(default_factory=list)
    best_per_round: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fallbacks: list[tuple[str, ResourcesMap]] = field(default_factory=list)
    """The sets the search accepted on its way to ``best``, latest first, each with the label
    of the change that made it (the starting set is not one of them): the trainer's further
    tries when the test gate refuses ``best`` (``run.py``: each is tested beside it, the first
    that holds is published). Why: every accepted change saved and held on val and train, but
    with 0/1 rewards on a dozen test tasks one lost task refuses a set, and the more changes a
    set carries the more chances it has to lose one; an earlier set carries fewer and still
    saves. Fixed before the test split is seen (docs/trainer.md, "Fallbacks")."""


CONCISE_SUFFIX = "\nAnswer as briefly as possible."


def _model_of(resources: ResourcesMap, step: LLMStep) -> tuple[str, str]:
    """(endpoint, model) of a step's LLM in a resource set."""
    llm = step_resource(resources, step.llm, step.name)
    return llm["endpoint"], llm["model"]


def _retires(refused: Candidate, step: LLMStep) -> Callable[[ResourcesMap], bool]:
    """Which other candidates of a step a winner refused on val and train takes with it: those
    with its model and prompt whose cap is no larger, and when none of its calls of the step
    was cut at its cap (the cap changed no text), every cap of that model and prompt, as they
    write the same texts. A different prompt, or a larger cap where the refused candidate's
    texts were cut, may do better and stays. Why not the whole model: seed 2 of
    classification x sequence refused the plan on Qwen 0.5B cut at 46 tokens with the concise
    prompt, and retiring Qwen 0.5B dropped, unconfirmed, the same cap with the original
    prompt, which had held on val at 41 % of the baseline's cost."""
    model, prompt, cap = _variant(refused.resources, step)
    cut = refused.truncated > 0

    def retired(resources: ResourcesMap) -> bool:
        m, p, k = _variant(resources, step)
        return (m, p) == (model, prompt) and (not cut or k <= cap)

    return retired


def _variant(resources: ResourcesMap, step: LLMStep) -> tuple[tuple[str, str], str, float]:
    """A step's (endpoint, model), prompt template and ``max_tokens`` (none: infinite)."""
    llm = step_resource(resources, step.llm, step.name)
    cap = (llm.get("sampling_parameters") or {}).get("max_tokens")
    prompt = step_resource(resources, step.prompt, step.name).get("template", "")
    return _model_of(resources, step), prompt, math.inf if cap is None else float(cap)


def _confirmations(log: list[Candidate], c: Candidate) -> list[Candidate]:
    """The ``[val+train]`` entries of ``c`` in the search's log (``CostSearch._confirm``)."""
    return [e for e in log if e.label == f"{c.label} [val+train]" and e.round == c.round]


def calls_cost(calls: list[CallRecord], price: tuple[float, float] | None) -> float | None:
    """What ``calls`` would cost at a model's (input, output) USD per 1M tokens; ``None``
    when the model has no price."""
    if price is None:
        return None
    return sum(c.input_tokens * price[0] + c.output_tokens * price[1] for c in calls) / 1e6


def figures(results: list[Result]) -> tuple[float, float, float]:
    """(mean reward, mean cost, mean latency) of results."""
    n = len(results) or 1
    return (
        sum(r.reward for r in results) / n,
        sum(r.cost for r in results) / n,
        sum(r.latency_s for r in results) / n,
    )


def step_order(steps: list[LLMStep], results: list[Result]) -> list[LLMStep]:
    """Most expensive step first (summed cost, then summed call time)."""
    cost: dict[str, float] = {}
    time_s: dict[str, float] = {}
    for r in results:
        for c in r.calls:
            cost[c.step] = cost.get(c.step, 0.0) + c.cost
            time_s[c.step] = time_s.get(c.step, 0.0) + c.latency_s
    return sorted(steps, key=lambda s: (-cost.get(s.name, 0.0), -time_s.get(s.name, 0.0)))


def step_calls(
    step: LLMStep, train_results: list[Result], val_results: list[Result]
) -> tuple[list[CallRecord], Callable[[CallRecord], bool]]:
    """A step's calls in the baseline's train and val runs (the statistics its ``max_tokens``
    caps come from), and whether a call was on a good run: a reward at least the mean reward
    of the train runs (by task)."""
    reward_of = {r.task_id: r.reward for r in train_results}
    threshold = mean(list(reward_of.values())) or 0.0
    runs = train_results + val_results
    calls = [c for r in runs for c in r.calls if c.step == step.name]
    call_reward = {id(c): r.reward for r in runs for c in r.calls}

    def good(c: CallRecord) -> bool:
        return call_reward.get(id(c), 0.0) >= threshold

    return calls, good


TRUNCATION_CAPS = (0.5, 0.25)
"""Fractions of a long step's median output tried as caps (see :func:`max_tokens_options`)."""
MIN_TRUNCATION_CAP = 16
LONG_OUTPUT_TOKENS = 4 * MIN_TRUNCATION_CAP
"""A step whose median output is at least this long gets :data:`TRUNCATION_CAPS`."""


TRUNCATION_PREMIUM = 0.05
"""How much cheaper than a candidate that cuts no text a candidate that cuts some must be to
rank before it (see :meth:`CostSearch._rank`).

Why: a cap that cuts a step's text on a few val tasks changes what the next steps read on
unseen tasks a way val barely samples, and when the same prompt without that cap writes short
texts anyway it buys next to nothing. Extraction x sequence, seeds 1 and 2 (docs/performance.md
1h): the concise plan at 64 and 58 tokens cost 0.3-0.4 % less on val than the concise plan at
256, halving kept the capped one, and on the benchmark's test tasks its cut lost one task's
fields on each seed. Where a cut saves in earnest (seed 0's plan at 59 tokens: 12 % below the
concise plan at 256; classification's plans of ~176 tokens), the premium changes nothing."""


def max_tokens_options(
    calls: list[CallRecord], good: Callable[[CallRecord], bool], current: int | None
) -> list[int]:
    """Caps from the output-length quantiles of successful calls, never below the longest
    output that hit ``finish_reason=length`` on a good run (cutting there changes answers).

    Those caps only stop runaway outputs: they keep every answer as it was. A step that writes
    long texts (median output >= :data:`LONG_OUTPUT_TOKENS`: a plan, a chain of thought) also
    gets caps at half and a quarter of its median output, which cut most of its texts short;
    whether the next steps still reach the answer from the shorter text is what the
    candidates' evaluation decides, as for any change. Why: the quantile caps of such a step
    are near or above the current cap, so its length was never searched. Seed 2 of
    classification x sequence: the plan step, half of the cost, wrote 176 tokens at the median
    on Qwen 1.5B (up to the 256 cap), and no cap below 256 was tried."""
    done = [c.output_tokens for c in calls if c.ok]
    ok = [c.output_tokens for c in calls if c.ok and c.finish_reason != "length"]
    floor = max(
        (c.output_tokens for c in calls if c.finish_reason == "length" and good(c)), default=0
    )
    opts: set[int] = set()
    for q, margin in ((0.95, 1.1), (0.99, 1.1), (1.0, 1.25)):
        v = quantile(ok, q)
        if v is not None:
            opts.add(max(1, math.ceil(v * margin)))
    opts = {o for o in opts if o >= floor and o > 0}
    median = quantile(done, 0.5)
    if median is not None and median >= LONG_OUTPUT_TOKENS:
        opts.update(max(MIN_TRUNCATION_CAP, round(median * f)) for f in TRUNCATION_CAPS)
    if current is not None:
        opts = {o for o in opts if o < current}
    return sorted(opts)


@dataclass(slots=True)
class _Round:
    """What one step's search compares against: the val tasks and the baseline's rewards on
    them, the current set's val figures and runs, and both sets' rewards by task id on val
    and train (``train``: the tasks a winner is confirmed on; empty: val alone decides)."""

    rnd: int
    step: LLMStep
    val: list[Task]
    base: dict[str, float]
    train: list[Task]
    base_all: dict[str, float]
    cur_all: dict[str, float]
    cur_cost: float
    cur_results: list[Result]
    log: list[Candidate]

    @property
    def current(self) -> dict[str, float]:
        """The rewards the current-set bound compares with on val, by task id: the current
        set's, or the reference's until a change is accepted (``CostSearch.run``)."""
        return {t.id: self.cur_all[t.id] for t in self.val}


class CostSearch:
    """See the module docstring. ``on_candidate`` is called after each evaluation."""

    def __init__(
        self,
        evaluator: Evaluator,
        steps: list[LLMStep],
        *,
        catalog: list[ModelOption],
        price: Callable[[str], tuple[float, float] | None],
        delta: float = 0.02,
        min_tasks: int = 4,
        seed: int = 0,
        prompt_variants: bool = True,
        max_confirmations: int = 3,
        keep_model_first: bool = False,
        model_swap_below: float = 0.10,
        on_candidate: Callable[[Candidate], None] | None = None,
    ) -> None:
        self.evaluator = evaluator
        self.steps = steps
        self.catalog = catalog
        self.price = price
        self.delta = delta
        self.min_tasks = max(1, min_tasks)
        self.seed = seed
        self.prompt_variants = prompt_variants
        self.max_confirmations = max(1, max_confirmations)
        self.keep_model_first = keep_model_first
        self.model_swap_below = model_swap_below
        self.on_candidate = on_candidate or (lambda c: None)

    def options(
        self,
        current: ResourcesMap,
        step: LLMStep,
        calls: list[CallRecord],
        good: Callable[[CallRecord], bool],
    ) -> list[tuple[str, ResourcesMap]]:
        """Every (label, resources) change of one step; unchanged sets are left out."""
        llm = step_resource(current, step.llm, step.name)
        cur_max = (llm.get("sampling_parameters") or {}).get("max_tokens")
        caps: list[int | None] = [cur_max, *max_tokens_options(calls, good, cur_max)]
        here = (llm["endpoint"], llm["model"])
        models = [ModelOption(llm["endpoint"], llm["model"], llm.get("api_key"))]
        models += [m for m in self.catalog if (m.endpoint, m.model) != here]
        prompt = step_resource(current, step.prompt, step.name)
        prompts: list[tuple[str, dict[str, Any] | None]] = [("", None)]
        if self.prompt_variants and prompt.get("engine", "f-string") == "f-string":
            if not prompt["template"].endswith(CONCISE_SUFFIX):
                prompts.append(
                    (" prompt=concise", {**prompt, "template": prompt["template"] + CONCISE_SUFFIX})
                )
        out: list[tuple[str, ResourcesMap]] = []
        for m in models:
            for cap in caps:
                for plabel, p in prompts:
                    if (
                        m.model == llm["model"]
                        and m.endpoint == llm["endpoint"]
                        and cap == cur_max
                        and p is None
                    ):
                        continue
                    sp = dict(llm.get("sampling_parameters") or {})
                    if cap is None:
                        sp.pop("max_tokens", None)
                    else:
                        sp["max_tokens"] = cap
                    new_llm = {**on_model(llm, m), "sampling_parameters": sp}
                    res = with_step_resource(current, step.llm, step.name, new_llm)
                    if p is not None:
                        res = with_step_resource(res, step.prompt, step.name, p)
                    out.append((f"{step.name}: model={m.model} max_tokens={cap}{plabel}", res))
        return out

    def _tiers(
        self, options: list[tuple[str, ResourcesMap]], current: ResourcesMap, step: LLMStep
    ) -> list[list[tuple[str, ResourcesMap]]]:
        """The pools a step's search goes through, one after the other until one yields a
        winner: all options at once, or with ``keep_model_first`` the changes on the step's
        own model (caps, prompt variants) first and the other models after them (``run``
        tries the second pool only when the first gave no winner, or one that saved less than
        ``model_swap_below``: :meth:`_saved_enough`). Why: with 0/1 rewards a change passes
        the test gate only if it loses no task, and moving a step to a weaker model changes
        more answers than shortening what the same model writes
        (benchmarks/optimization/probes/flips.py, docs/performance.md 1c)."""
        if not self.keep_model_first:
            return [options]
        here = _model_of(current, step)
        same = [(lbl, res) for lbl, res in options if _model_of(res, step) == here]
        other = [(lbl, res) for lbl, res in options if _model_of(res, step) != here]
        return [pool for pool in (same, other) if pool]

    def _saved_enough(self, winner: Candidate, cur_cost: float) -> bool:
        """Whether a step's winner on its own model saved enough for the other models to be
        left untried: at least ``model_swap_below`` of the current set's val cost.

        Why not any saving: extraction x organizer_worker, seed 2 (docs/performance.md 1o):
        after APO's better worker prompt, a cap of 8 tokens on the 1.5B worker saved 2 % on
        val, and the 0.5B worker, the one change that could cut the bill by a third, was
        never tried."""
        if cur_cost <= 0:
            return True
        return (cur_cost - winner.cost) / cur_cost >= self.model_swap_below

    def _same_texts_at_a_larger_cap(
        self, keep: list[tuple[Candidate, list[Result]]], step: str
    ) -> list[tuple[Candidate, list[Result]]]:
        """``keep`` without the candidates that wrote the same texts as one of the same model
        and prompt at a larger cap: neither cut a text and both cost the same. Such a lower
        cap saved nothing on these tasks and can only cut texts on others; ranked by latency,
        the tie went to it on noise (extraction x sequence, seed 3: the concise plan at 64
        and at 256 tokens cost the same on 8 val tasks, the 64 was kept, then cut 2 of 11 val
        texts, too late for :data:`TRUNCATION_PREMIUM`; docs/performance.md 1j)."""
        llm_step = next((s for s in self.steps if s.name == step), None)
        if llm_step is None:
            return keep

        variant = {id(c): _variant(c.resources, llm_step) for c, _ in keep}

        def same_texts_larger_cap(a: Candidate, b: Candidate) -> bool:
            (ma, pa, ka), (mb, pb, kb) = variant[id(a)], variant[id(b)]
            return (
                (ma, pa) == (mb, pb)
                and kb > ka
                and not a.truncated
                and not b.truncated
                and math.isclose(a.cost, b.cost, rel_tol=1e-9, abs_tol=0.0)
            )

        out = []
        for c, r in keep:
            larger = next((o for o, _ in keep if same_texts_larger_cap(c, o)), None)
            if larger is None:
                out.append((c, r))
            else:
                c.rejected_because = f"halving: the same texts and cost as {larger.label}"
        return out

    def _rank(self, c: Candidate) -> tuple[int, float, float, float]:
        """Order of a rung's survivors: first those whose lower bound already meets the final
        rule (cheapest first: the final rung picks the cheapest of them), then the others,
        the best lower bound first. Ranking by cost alone kept cheap candidates that were
        losing reward (within the rung's slack) and dropped dearer ones that were not, so the
        cheap ones then failed the final rule and the step ended with no winner. Among the
        first, one that cut its step's text on some task ranks by its cost plus
        :data:`TRUNCATION_PREMIUM`: a cut must save to be worth its risk."""
        lb = c.worst_bound()
        if lb >= -self.delta:
            cost = c.cost * (1.0 + TRUNCATION_PREMIUM) if c.truncated else c.cost
            return (0, cost, c.latency_s, -c.reward)
        return (1, -lb, c.cost, c.latency_s)

    def _better(
        self, c: Candidate, results: list[Result], cur_cost: float, cur_results: list[Result]
    ) -> bool:
        """Cheaper than the current set on val; at equal cost, faster task by task (paired
        bootstrap lower bound of the per-task latency gain > 0), not merely at the mean.

        Why the test at equal cost: a change that leaves every output as it was (a
        ``max_tokens`` cap above every answer) costs the same, and its mean latency is lower
        half the time by chance; comparing means accepted such changes as "faster"."""
        if c.cost < cur_cost - 1e-12 * max(1.0, abs(cur_cost)):
            return True
        if c.cost > cur_cost + 1e-12 * max(1.0, abs(cur_cost)):
            return False
        by_task = {r.task_id: r.latency_s for r in cur_results}
        pairs = [(by_task[r.task_id], r.latency_s) for r in results if r.task_id in by_task]
        if not pairs:
            return False
        gain = paired_bootstrap_lower([a for a, _ in pairs], [b for _, b in pairs], seed=self.seed)
        return gain > 0

    def _accepts(
        self, c: Candidate, results: list[Result], cur_cost: float, cur_results: list[Result]
    ) -> bool:
        """The final rule, on the full val split: both lower bounds hold and it is cheaper or
        faster than the current set. Records why not on the candidate."""
        if not c.holds(self.delta):
            c.rejected_because = c.why_not_held(self.delta)
            return False
        if not self._better(c, results, cur_cost, cur_results):
            c.rejected_because = "not cheaper or faster than the current set"
            return False
        return True

    async def _score(
        self,
        label: str,
        res: ResourcesMap,
        tasks: list[Task],
        base: dict[str, float],
        rnd: int,
        step: str | None,
        current: dict[str, float] | None = None,
    ) -> tuple[Candidate, list[Result]]:
        results = await self.evaluator.evaluate(res, tasks)
        reward, cost, lat = figures(results)
        cand = Candidate(label, res, rnd, step, len(tasks), reward, cost, lat)
        if step is not None:
            cand.truncated = sum(
                any(c.step == step and c.finish_reason == "length" for c in r.calls)
                for r in results
            )
        rewards = [r.reward for r in results]
        cand.lower_bound = paired_bootstrap_lower(
            rewards, [base[t.id] for t in tasks], seed=self.seed
        )
        if current is not None and current != base:
            cand.step_lower_bound = paired_bootstrap_lower(
                rewards, [current[t.id] for t in tasks], seed=self.seed
            )
        self.on_candidate(cand)
        return cand, results

    async def _halving(
        self,
        pool: list[tuple[str, ResourcesMap]],
        val: list[Task],
        base: dict[str, float],
        rnd: int,
        step: str,
        current: dict[str, float],
        log: list[Candidate],
    ) -> tuple[list[tuple[Candidate, list[Result]]], list[tuple[Candidate, list[Result]]]]:
        """Successive halving over ``pool``: a cheap prefix of val first, keep the better half,
        double. Returns the last rung's scored candidates and those of them scored on the whole
        val split that stayed within the rung's slack, best first (``_rank``)."""
        n = min(len(val), max(self.min_tasks, len(val) // 4))
        alive = pool
        scored: list[tuple[Candidate, list[Result]]] = []
        while True:
            tasks = val[:n]
            # A rung's candidates are scored together: the evaluator bounds the runs in
            # flight, so its runners stay busy (one candidate x 2 tasks would use only 2).
            scored = list(
                await asyncio.gather(
                    *(self._score(lbl, res, tasks, base, rnd, step, current) for lbl, res in alive)
                )
            )
            log.extend(c for c, _ in scored)
            # the higher of the baseline's and the current set's mean on these tasks
            ref_mean = max(
                mean([base[t.id] for t in tasks]) or 0.0,
                mean([current[t.id] for t in tasks]) or 0.0,
            )
            slack = self.delta + 0.5 / math.sqrt(n)
            keep = []
            for c, r in scored:
                if c.reward - ref_mean >= -slack:
                    keep.append((c, r))
                else:
                    c.rejected_because = (
                        f"halving: reward {c.reward:.2f} vs {ref_mean:.2f} (baseline or "
                        f"current set) on {n} val tasks"
                    )
            keep = self._same_texts_at_a_larger_cap(keep, step)
            keep.sort(key=lambda cr: self._rank(cr[0]))
            if n < len(val) and len(keep) > 1:
                for c, _ in keep[max(1, len(keep) // 2) :]:
                    c.rejected_because = "halving: not in the cheaper half"
            if n >= len(val) or len(keep) <= 1:
                break
            alive = [(c.label, c.resources) for c, _ in keep[: max(1, len(keep) // 2)]]
            for c, _ in keep[: max(1, len(keep) // 2)]:
                c.advanced = True
            n = min(len(val), n * 2)
        if n >= len(val) or not keep:
            return scored, keep
        # Halving stopped early with one survivor: score it on the full val split.
        c, r = await self._score(
            keep[0][0].label, keep[0][0].resources, val, base, rnd, step, current
        )
        log.append(c)
        keep[0][0].advanced = True
        return [*scored, (c, r)], [(c, r)]

    async def _confirm(
        self,
        c: Candidate,
        val_results: list[Result],
        train: list[Task],
        base: dict[str, float],
        current: dict[str, float],
    ) -> tuple[Candidate, dict[str, float]]:
        """Score a val winner on the train tasks too: both lower bounds on val and train
        pooled must hold (module docstring). Returns the pooled entry (``accepted`` when it
        held) and the winner's train rewards by task id.
        ``base``/``current``: rewards of the baseline and of the current set, by task id, on
        val and train."""
        train_results = await self.evaluator.evaluate(c.resources, train)
        results = val_results + train_results
        reward, cost, lat = figures(results)
        pooled = Candidate(
            f"{c.label} [val+train]", c.resources, c.round, c.step, len(results), reward, cost, lat
        )
        rewards = [r.reward for r in results]
        pooled.lower_bound = paired_bootstrap_lower(
            rewards, [base[r.task_id] for r in results], seed=self.seed
        )
        if current != base:
            pooled.step_lower_bound = paired_bootstrap_lower(
                rewards, [current[r.task_id] for r in results], seed=self.seed
            )
        pooled.accepted = pooled.holds(self.delta)
        if not pooled.accepted:
            pooled.rejected_because = f"on val and train: {pooled.why_not_held(self.delta)}"
            c.rejected_because = "held on val, not on val and train (its [val+train] entry)"
        self.on_candidate(pooled)
        return pooled, {r.task_id: r.reward for r in train_results}

    async def _pool_winner(
        self, pool: list[tuple[str, ResourcesMap]], r: _Round
    ) -> tuple[Candidate | None, list[Result], dict[str, float]]:
        """One pool of a step (``_tiers``): successive halving on val, and the best candidate
        that ``_accepts`` confirmed on val and train. A refused one retires what cannot do
        better (``_retires``) and halving runs again over the rest, at most
        ``max_confirmations`` times. Returns the winner (``None``: none), its val runs and
        its train rewards by task id."""
        winner: Candidate | None = None
        winner_results: list[Result] = []
        winner_train: dict[str, float] = {}
        step, current = r.step, r.current
        scored: list[tuple[Candidate, list[Result]]] = []
        for _ in range(self.max_confirmations if r.train else 1):
            scored, final = await self._halving(
                pool, r.val, r.base, r.rnd, step.name, current, r.log
            )
            c_r = next(
                ((c, res) for c, res in final if self._accepts(c, res, r.cur_cost, r.cur_results)),
                None,
            )
            if c_r is None:
                break
            c, results = c_r
            if r.train:
                pooled, train_rewards = await self._confirm(
                    c, results, r.train, r.base_all, r.cur_all
                )
                r.log.append(pooled)
                if not pooled.accepted:
                    # What cannot do better is retired for this step (see _retires); the next
                    # halving reuses cached runs.
                    retired = _retires(c, step)
                    pool = [(lbl, res) for lbl, res in pool if lbl != c.label and not retired(res)]
                    for rest, _ in scored:
                        if rest is not c and not rest.advanced and rest.rejected_because is None:
                            rest.rejected_because = "a candidate refused on val and train"
                    if not pool:
                        break
                    continue
                winner_train = train_rewards
            winner, winner_results = c, results
            break
        for c, _ in scored:
            if c is not winner and not c.advanced and c.rejected_because is None:
                c.rejected_because = "a cheaper or faster candidate of this step won"
        return winner, winner_results, winner_train

    async def run(
        self,
        baseline: ResourcesMap,
        val: list[Task],
        train_results: list[Result],
        train: list[Task] | None = None,
        reference: ResourcesMap | None = None,
    ) -> SearchOutcome:
        """Search from ``baseline``; ``train_results`` (baseline runs) give token statistics;
        ``train``: tasks a step's winner is confirmed on as well (none: val alone decides).

        ``reference``: the set whose rewards the lower bounds compare with (default
        ``baseline``). With ``--algorithm both`` it is the workflow's own baseline while the
        search starts from APO's prompts, so the first accepted change may spend what APO
        gained. Why: compared with APO's best, the search refused the 0.5B worker with APO's
        prompt (extraction x organizer_worker seed 4, docs/performance.md 1p: lower bound
        -0.060 on val and train against APO's best) that scored 0.79 on val where the
        workflow's baseline scored 0.64, at 38 % less; the goal is the baseline's quality at
        a lower cost, not APO's."""
        if not val:
            raise ValueError("the cost search needs at least one val task")
        base_results = await self.evaluator.evaluate(baseline, val)
        if all(not r.ok for r in base_results):
            raise RuntimeError(
                "every baseline run failed on val: "
                + (base_results[0].error or "no error recorded")
            )
        ref_results = (
            base_results if reference is None else await self.evaluator.evaluate(reference, val)
        )
        base = {t.id: r.reward for t, r in zip(val, ref_results, strict=True)}
        b_reward, b_cost, b_lat = figures(base_results)
        out = SearchOutcome(best=baseline)
        first_lb = (
            0.0
            if reference is None
            else paired_bootstrap_lower(
                [r.reward for r in base_results], [r.reward for r in ref_results], seed=self.seed
            )
        )
        first = Candidate(
            "baseline", baseline, 0, None, len(val), b_reward, b_cost, b_lat, first_lb
        )
        first.accepted = True
        out.candidates.append(first)
        self.on_candidate(first)
        out.best_per_round.append(
            {
                "round": 0,
                "label": "baseline",
                "reward": b_reward,
                "cost": b_cost,
                "latency_s": b_lat,
            }
        )
        cur, cur_fig = baseline, (b_reward, b_cost, b_lat)
        cur_results = base_results
        train = [t for t in train or [] if t.id not in base]
        base_all = dict(base)
        if train:  # the reference's train runs (cached when train_results measured them)
            base_train = await self.evaluator.evaluate(reference or baseline, train)
            base_all.update({r.task_id: r.reward for r in base_train})
        cur_all = dict(base_all)

        for rnd, step in enumerate(step_order(self.steps, base_results + train_results), 1):
            calls, good = step_calls(step, train_results, base_results)
            options = self.options(cur, step, calls, good)
            if not options:
                out.notes.append(f"{step.name}: no alternative to try")
                continue
            state = _Round(
                rnd=rnd,
                step=step,
                val=val,
                base=base,
                train=train,
                base_all=base_all,
                cur_all=cur_all,
                cur_cost=cur_fig[1],
                cur_results=cur_results,
                log=out.candidates,
            )
            winner: Candidate | None = None
            winner_results: list[Result] = []
            winner_train: dict[str, float] = {}
            for pool in self._tiers(options, cur, step):
                if winner is not None:
                    if self._saved_enough(winner, state.cur_cost):
                        break
                    out.notes.append(
                        f"{winner.label} saved {1 - winner.cost / state.cur_cost:.0%} of the"
                        f" val cost (< {self.model_swap_below:.0%}): other models tried too"
                    )
                found, found_results, found_train = await self._pool_winner(pool, state)
                if found is None:
                    continue
                if winner is not None and winner.cost <= found.cost:
                    found.rejected_because = f"not cheaper than {winner.label}"
                    continue
                if winner is not None:
                    for entry in (winner, *_confirmations(out.candidates, winner)):
                        entry.accepted = False
                        entry.rejected_because = f"{found.label} saved more"
                winner, winner_results, winner_train = found, found_results, found_train
            if winner is not None:
                winner.accepted = True
                cur, cur_fig = winner.resources, (winner.reward, winner.cost, winner.latency_s)
                cur_results = winner_results
                cur_all.update({r.task_id: r.reward for r in winner_results})
                cur_all.update(winner_train)
                out.notes.append(f"accepted {winner.label}")
                out.fallbacks.insert(0, (winner.label, cur))
            else:
                out.notes.append(f"{step.name}: kept (no candidate held the reward and saved)")
            out.best_per_round.append(
                {
                    "round": rnd,
                    "label": winner.label if winner else f"{step.name}: unchanged",
                    "reward": cur_fig[0],
                    "cost": cur_fig[1],
                    "latency_s": cur_fig[2],
                }
            )
        out.best = cur
        out.fallbacks = out.fallbacks[1:]  # the first is ``best`` itself
        if out.fallbacks:
            out.notes.append(
                f"fallbacks for the test gate: the {len(out.fallbacks)} set(s) accepted before"
                " the winner"
            )
        return out
