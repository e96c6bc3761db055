"""A run stands for another resource set when the two differ only in ``max_tokens`` caps that
none of the run's calls reached.

Why this is sound: a model generates token by token and the cap only decides where it stops.
A call that ended below both caps wrote the same text under either, so the rest of the run saw
the same inputs; the run is a sample of the other set as much as of its own (the same
distribution, and on a repeatable model server the same run). Why it matters: the cost search
tries several caps per step, and the caps cut from output-length quantiles lie above most
outputs (seed 2 of classification x sequence: solve at 256, 34, 30 and 28 tokens, answers of
~20), so most of their runs would only repeat runs already made, at full price and time.

The conditions, per step whose cap differs: every call of the step in the run succeeded, wrote
at least one token (usage known), and stopped below the lower of the two caps. Everything else
the steps use (model, endpoint, other sampling parameters, prompts, system prompts) and every
resource no step uses must be equal.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lightspan.trainer.resmap import LLMStep, resolve

if TYPE_CHECKING:  # evaluate.py imports this module
    from lightspan.trainer.evaluation.evaluate import Result

Caps = dict[str, float]
"""Step name -> its ``max_tokens`` (``inf`` when unset)."""


@dataclasses.dataclass(frozen=True, slots=True)
class CapView:
    """A resource set seen by its steps: everything but the caps (``rest``), and the caps."""

    rest: str
    caps: Caps


def cap_view(resources: Mapping[str, Any], steps: list[LLMStep]) -> CapView:
    """What the steps of a workflow read from ``resources``, caps apart (``rest`` is a canonical
    JSON text: equal texts mean equal sets but for the caps)."""
    per_step: dict[str, Any] = {}
    caps: Caps = {}
    used: set[str] = set()
    for s in steps:
        names = [s.llm, s.prompt] + ([s.system] if s.system else [])
        keys = [resolve(resources, n, s.name) for n in names]
        used.update(keys)
        used.update(names)
        llm = dict(resources.get(keys[0]) or {})
        sp = dict(llm.get("sampling_parameters") or {})
        cap = sp.pop("max_tokens", None)
        caps[s.name] = math.inf if cap is None else float(cap)
        llm["sampling_parameters"] = sp
        per_step[s.name] = [llm, *(resources.get(k) for k in keys[1:])]
    others = {k: v for k, v in resources.items() if k not in used}
    rest = json.dumps([per_step, others], sort_keys=True, default=str)
    return CapView(rest, caps)


def stands_for(run: Result, source: CapView, target: CapView) -> bool:
    """Whether ``run``, made with ``source``'s resources, is also a run of ``target``'s."""
    if not run.ok or source.rest != target.rest:
        return False
    for step, cap in target.caps.items():
        old = source.caps.get(step, math.inf)
        if cap == old:
            continue
        lower = min(cap, old)
        for c in run.calls:
            if c.step == step and not (c.ok and 0 < c.output_tokens < lower):
                return False
    return True


def as_run_of(run: Result, target: CapView) -> Result:
    """``run`` with its calls' caps as ``target`` sets them (what the call records say)."""
    caps = {step: None if math.isinf(v) else int(v) for step, v in target.caps.items()}
    calls = [
        dataclasses.replace(c, max_tokens=caps[c.step]) if c.step in caps else c for c in run.calls
    ]
    return dataclasses.replace(run, calls=calls)


def find_stand_in(
    task_id: str,
    target: CapView,
    cached: Mapping[str, tuple[CapView, Mapping[str, Result]]],
) -> Result | None:
    """The first cached run of ``task_id`` (in the order runs were made) that stands for
    ``target``. The first, never the best: choosing among runs by their outcome would bias the
    candidate's figures."""
    for view, runs in cached.values():
        run = runs.get(task_id)
        if run is not None and stands_for(run, view, target):
            return as_run_of(run, target)
    return None
