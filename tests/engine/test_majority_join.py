"""``join=majority``: branches start only while a majority is still open, and a majority reducer
gets the answer it would have got with ``join=all``."""

from __future__ import annotations

import asyncio
import random
import textwrap
from collections import Counter

import pytest

from lightspan.engine import (
    JoinFailed,
    Workflow,
    WorkflowDefinitionError,
    fork,
    load_workflow,
    task,
)


def answering(values: list[object], started: list[str]) -> list:
    """One task per value: records that it started, then returns its value."""

    def make(i: int, v: object):
        async def f(_):
            started.append(f"b{i}")
            await asyncio.sleep(0.001 * (len(values) - i))  # later branches finish first
            return v

        return task(f"b{i}", f)

    return [make(i, v) for i, v in enumerate(values)]


def majority_vote(results: dict) -> object:
    """The most common answer, ties to the first branch (the benchmark's reducers' rule)."""
    vals = [v for v in results.values() if v is not None]
    if not vals:
        return None
    counts = Counter(vals)
    return next(v for v in vals if counts[v] == max(counts.values()))


def run(values, join="majority", **kw):
    started: list[str] = []
    r = Workflow("t", fork("f", answering(values, started), join=join, **kw)).run_sync(None)
    assert r.ok, r.error
    return r.output, started


def test_agreeing_first_majority_never_starts_the_rest():
    out, started = run(["x", "x", "y"])
    assert out == {"b0": "x", "b1": "x"}
    assert sorted(started) == ["b0", "b1"]
    out, started = run(["x", "x", "x", "y", "z"])
    assert sorted(started) == ["b0", "b1", "b2"]


def test_disagreement_starts_as_few_branches_as_could_decide():
    out, started = run(["x", "y", "x"])
    assert out == {"b0": "x", "b1": "y", "b2": "x"}
    # 5 branches, first 3 all different: 2 more can still make a majority of 3, both start.
    _, started = run(["x", "y", "z", "x", "x"])
    assert sorted(started) == ["b0", "b1", "b2", "b3", "b4"]
    # x, x, y: one more x decides; d says y, so e runs too.
    _, started = run(["x", "x", "y", "y", "x"])
    assert started[3:] == ["b3", "b4"]
    _, started = run(["x", "x", "y", "x", "q"])
    assert sorted(started) == ["b0", "b1", "b2", "b3"]


def test_no_votes_possible_runs_every_branch():
    """Empty answers do not vote; when no value can reach a majority, all the rest run."""
    out, started = run(["", " ", "", "x", "y"])
    assert len(started) == 5 and len(out) == 5


def test_agree_key_decides_what_counts_as_the_same_answer():
    out, started = run(["Yes", "yes ", "no"], agree=lambda v: v.strip().casefold())
    assert out == {"b0": "Yes", "b1": "yes "} and sorted(started) == ["b0", "b1"]
    _, started = run(["Yes", "yes ", "no"])
    assert len(started) == 3


def test_majority_reducer_answers_as_with_join_all():
    rng = random.Random(7)
    skipped = 0
    for _ in range(300):
        n = rng.randint(1, 6)
        values = [rng.choice(["a", "b", "c", None]) for _ in range(n)]
        started_all: list[str] = []
        full = Workflow(
            "t", fork("f", answering(values, started_all), join="all", reducer=majority_vote)
        ).run_sync(None)
        lazy, started = run(values, reducer=majority_vote, agree=lambda v: v)
        assert lazy == full.output, (values, started)
        skipped += n - len(started)
    assert skipped > 10  # and it did skip branches


def test_fail_fast_raises_the_branch_error_and_skips_the_rest():
    async def boom(_):
        raise ValueError("branch broke")

    started: list[str] = []
    branches = [task("bad", boom), *answering(["x", "y"], started)]
    r = Workflow("t", fork("f", branches, join="majority")).run_sync(None)
    assert not r.ok and isinstance(r.error, ValueError)
    assert "b1" not in started  # the failure ended the fork: nothing more started


def test_collect_treats_a_failure_as_no_vote():
    async def boom(_):
        raise ValueError("branch broke")

    started: list[str] = []
    branches = [task("bad", boom), *answering(["x", "x"], started)]
    r = Workflow("t", fork("f", branches, join="majority", on_error="collect")).run_sync(None)
    assert r.ok and r.output == {"b0": "x", "b1": "x"}
    everything_failed = [task("a", boom), task("b", boom), task("c", boom)]
    r = Workflow("t", fork("f", everything_failed, join="majority", on_error="collect")).run_sync(
        None
    )
    assert isinstance(r.error, JoinFailed)


def test_agree_without_majority_is_a_definition_error():
    with pytest.raises(WorkflowDefinitionError, match="agree is used by join majority only"):
        fork("f", [task("a", lambda x: x)], join="all", agree=str)


def test_yaml_join_majority_with_agree(tmp_path):
    p = tmp_path / "wf.yaml"
    p.write_text(
        textwrap.dedent(
            """
            workflow: vote
            root:
              fork:
                name: vote
                join: majority
                agree: "tests.engine.helpers:parity"
                branches:
                  - task: {name: a, call: "tests.engine.helpers:double"}
                  - task: {name: b, call: "tests.engine.helpers:add_one"}
                  - task: {name: c, call: "tests.engine.helpers:double"}
            """
        )
    )
    w = load_workflow(p)
    assert w.run_sync(2).output == {"a": 4, "b": 3, "c": 4}  # 4 and 3 differ in parity
    assert w.run_sync(1).output == {"a": 2, "b": 2}  # both even: c never starts
