"""Routing long inputs to the baseline: fitted on the search's own runs, tested on test.

Why: a cheaper set that holds on val and train can still lose an answer on test, and on the
benchmark's tasks every answer a cheaper set lost was on the longest, hardest inputs
(docs/performance.md 1c''). A route keeps the winner for inputs of at most ``max_chars``
characters and the baseline's resources for longer ones, a rule a runner applies before any
model call (``<key>|input>N`` variants, :meth:`lightspan.engine.ResourceSet.for_input`).

The threshold comes from the trainer's own data, never from test: the longest train or val
input shorter than every input on which a set the search evaluated scored lower than the
baseline. Inputs between that one and the shortest lost input go to the baseline too: no run
says a cheaper set is safe there (seed 1 in docs/performance.md, "The route in the trainer":
a threshold one below the shortest lost input, 176 characters, left a test input of 171 on
the winner, which lost it; the longest shorter train or val input had 144). A set that lost
more than ``MAX_LOSS_SHARE`` of the tasks the baseline solved is left out: it shows the set
is bad, not which inputs are hard. The routed set's test runs need no rollout of their own:
on each test task it *is* the winner or the baseline, whose test runs the gate has already,
so they are composed from them (:func:`compose`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightspan.engine import LONG_INPUT, input_chars
from lightspan.trainer.data import Task
from lightspan.trainer.evaluation.evaluate import Result
from lightspan.trainer.resmap import ResourcesMap

MAX_LOSS_SHARE = 0.25
"""A set that lost more than this share of the tasks the baseline solved is not evidence."""


@dataclass(slots=True)
class Route:
    """Inputs of more than ``max_chars`` characters go to the baseline's resources."""

    max_chars: int
    lost: list[dict[str, Any]] = field(default_factory=list)
    """The evidence: each train/val task a counted set lost (id, characters, sets)."""
    sets_counted: int = 0
    sets_left_out: int = 0
    routed_share: float = 0.0
    """Of the train and val inputs, the share the route sends to the baseline."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_chars": self.max_chars,
            "lost": self.lost,
            "sets_counted": self.sets_counted,
            "sets_left_out": self.sets_left_out,
            "routed_share": self.routed_share,
        }


def fit_route(
    baseline: Mapping[str, Result],
    others: Mapping[str, Mapping[str, Result]],
    tasks: list[Task],
) -> tuple[Route | None, str]:
    """The route from the search's runs, or ``None`` and why there is none.

    ``baseline``: the baseline's results by task id; ``others``: every other evaluated set's
    results by task id (keyed by anything, e.g. the set's digest); ``tasks``: train and val."""
    chars = {t.id: input_chars(t.input) for t in tasks}
    lost_by: dict[str, int] = {}
    counted = left_out = 0
    for results in others.values():
        shared = [i for i in results if i in baseline and i in chars]
        solved = [i for i in shared if baseline[i].reward > 0]
        lost = [i for i in shared if results[i].reward < baseline[i].reward]
        if not lost:
            counted += 1
            continue
        if len(lost) > MAX_LOSS_SHARE * max(1, len(solved)):
            left_out += 1
            continue
        counted += 1
        for i in lost:
            lost_by[i] = lost_by.get(i, 0) + 1
    if not lost_by:
        why = "no set the search ran lost a train or val task the baseline solved"
        if left_out:
            why += f" (besides {left_out} that lost more than {MAX_LOSS_SHARE:.0%} of them)"
        return None, why
    shortest = min(chars[i] for i in lost_by)
    shorter = [c for c in chars.values() if c < shortest]
    if not shorter:
        return None, (
            f"a set lost the shortest input ({shortest} characters): a route would send every "
            "input to the baseline"
        )
    limit = max(shorter)
    lost = sorted(
        ({"task": i, "chars": chars[i], "sets": n} for i, n in lost_by.items()),
        key=lambda d: d["chars"],
    )
    share = sum(c > limit for c in chars.values()) / len(chars)
    route = Route(limit, lost, counted, left_out, share)
    return route, (
        f"inputs over {limit} characters on the baseline ({share:.0%} of train and val): "
        f"the shortest of {len(lost)} input(s) a cheaper set lost has {shortest}, the longest "
        f"shorter one {limit}"
    )


def routed_resources(winner: ResourcesMap, baseline: ResourcesMap, route: Route) -> ResourcesMap:
    """The winner with a ``<key>|input>N`` variant, the baseline's resource, for every key
    whose resource differs (a per-step key the baseline lacks falls back to its ``<name>``)."""
    out = {k: dict(v) for k, v in winner.items()}
    for key, res in winner.items():
        long = baseline.get(key) or baseline.get(key.split("@", 1)[0])
        if long is not None and long != res:
            out[f"{key}{LONG_INPUT}{route.max_chars}"] = dict(long)
    return out


def compose(
    winner: list[Result], baseline: list[Result], tasks: list[Task], route: Route
) -> list[Result]:
    """The routed set's results: the winner's run on each short input, the baseline's on
    each long one (the same resources, so the same run)."""
    return [
        b if input_chars(t.input) > route.max_chars else w
        for t, w, b in zip(tasks, winner, baseline, strict=True)
    ]
