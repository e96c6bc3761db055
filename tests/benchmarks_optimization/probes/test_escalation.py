"""benchmarks/optimization/probes/escalation.py: the signals it reads and the cascades it prices.

Why: its table decides which escalation signal the trainer is given next (issue 11); a signal
read from the wrong token, or a cascade that forgets the check's or the baseline's cost, would
send that work the wrong way."""

from __future__ import annotations

import argparse
import json
import math

import httpx
import pytest
from benchmarks.optimization.probes.escalation import (
    CHECKS,
    _threshold,
    cascade,
    catch_all,
    read_tasks,
    run_check,
)
from benchmarks.optimization.probes.flips import Chain, confidence
from benchmarks.optimization.steps import sentences
from benchmarks.optimization.tasks import generate
from benchmarks.optimization.workflows import PROMPTS

from lightspan.engine import PriceTable
from lightspan.trainer.data import TaskFileError

LABELS = ["sports", "weather", "finance", "food"]


def _tok(text: str, p: float, runner_up: float | None = None) -> dict:
    top = [{"token": text, "logprob": math.log(p)}]
    if runner_up is not None:
        top.append({"token": "x", "logprob": math.log(runner_up)})
    return {"token": text, "logprob": math.log(p), "top_logprobs": top}


def test_confidence_reads_the_first_token_that_starts_a_label() -> None:
    # "The" and "spo" (too short to mean anything / not a label start) come first; " finance"
    # is the decision; the later " sports" must not replace it.
    lps = [_tok("The", 0.9), _tok(" topic", 0.8), _tok(" finance", 0.6, 0.3), _tok(" sports", 0.99)]
    got = confidence("solve", lps, LABELS)
    assert math.isclose(got["solve_label_p"], 0.6)
    assert math.isclose(got["solve_label_margin"], 0.6 - 0.3)
    assert math.isclose(got["solve_min_p"], 0.6)
    assert math.isclose(got["solve_mean_lp"], sum(math.log(p) for p in (0.9, 0.8, 0.6, 0.99)) / 4)
    # No label token: no label signal (the cascade then escalates on it); no tokens: nothing.
    assert "plan_label_p" not in confidence("plan", [_tok("Read", 0.5)], LABELS)
    assert confidence("plan", [], LABELS) == {}


def _chain(reward: float, cost_tokens: int, seconds: float, label: str, **signals: float) -> Chain:
    return Chain(reward, None, {"m": [0, cost_tokens]}, seconds, signals, label)


def test_a_cascade_keeps_the_baselines_answer_where_it_escalates_and_pays_for_every_run() -> None:
    tasks = generate("classification", "train", 3, seed=5)
    a, b, c = (t.id for t in tasks)
    base = {a: _chain(1, 100, 10, "x"), b: _chain(1, 100, 10, "y"), c: _chain(0, 100, 10, "z")}
    cheap = {
        a: _chain(1, 20, 2, "x", solve_label_p=0.9),
        b: _chain(0, 20, 2, "w", solve_label_p=0.4),  # the lost task: unsure
        c: _chain(1, 20, 2, "z", solve_label_p=0.8),  # a gain the cascade keeps
    }
    check = {i: _chain(1, 5, 1, lab) for i, lab in ((a, "x"), (b, "y"), (c, "z"))}
    prices = PriceTable({"m": {"input": 0.0, "output": 1.0}})
    never = cascade(cheap, base, tasks, lambda t: False, prices)
    assert never == {"escalated": 0.0, "lost": 1, "cost": 20.0, "p50": 2.0}
    tau = catch_all(cheap, [t for t in tasks if t.id == b], "solve_label_p")
    assert tau == 0.4
    unsure = cascade(
        cheap, base, tasks, lambda t: cheap[t.id].signals["solve_label_p"] <= tau, prices
    )
    assert unsure == {"escalated": 1 / 3, "lost": 0, "cost": (20 + 120 + 20) / 3, "p50": 2.0}
    disagree = cascade(
        cheap, base, tasks, lambda t: check[t.id].label != cheap[t.id].label, prices, [check]
    )
    # Every task pays for the check (5) and its time (1); only b is escalated.
    assert disagree == {"escalated": 1 / 3, "lost": 0, "cost": (25 + 125 + 25) / 3, "p50": 3.0}
    # Two checks: both paid for on every task.
    two = cascade(cheap, base, tasks, lambda t: False, prices, [check, check])
    assert two == {"escalated": 0.0, "lost": 1, "cost": 30.0, "p50": 4.0}
    # A lost task without the signal escalates at any threshold.
    assert catch_all({b: _chain(0, 1, 1, "w")}, [t for t in tasks if t.id == b], "x") == math.inf
    assert catch_all(cheap, [], "solve_label_p") is None


async def test_the_check_sends_the_familys_one_call_prompt(fake_llm) -> None:
    task = generate("classification", "train", 1, seed=99)[0]
    step, reverse = CHECKS["direct answer, Qwen 1.5B"]
    assert not reverse
    async with httpx.AsyncClient() as client:
        got = await run_check(client, fake_llm.base_url, step, task)
    (sent,) = fake_llm.requests
    assert sent["messages"][-1]["content"] == PROMPTS["classification"]["answer"].format(
        **task.input
    )
    assert (sent["model"], sent["max_tokens"], sent["temperature"]) == (step[0], 8, 0.0)
    # The fake echoes the prompt, whose first label named is the list's first.
    assert got.label == "sports"
    assert got.reward == (1.0 if task.expected == "sports" else 0.0)


def test_a_fixed_threshold_names_what_is_wrong_with_it() -> None:
    assert _threshold("plan_mean_lp=-0.479") == ("plan_mean_lp", -0.479)
    with pytest.raises(argparse.ArgumentTypeError, match="SIGNAL one of"):
        _threshold("plan_confidence=-0.5")
    with pytest.raises(argparse.ArgumentTypeError, match="'low' is not a number"):
        _threshold("plan_mean_lp=low")


async def test_the_reversed_check_reads_the_sentences_last_first(fake_llm) -> None:
    task = next(t for t in generate("classification", "train", 30, seed=99) if t.difficulty == 3)
    step, reverse = CHECKS["direct answer, sentences reversed, Qwen 1.5B"]
    assert reverse
    async with httpx.AsyncClient() as client:
        await run_check(client, fake_llm.base_url, step, task, reverse)
    (sent,) = fake_llm.requests
    first, second, third = sentences(task.input["text"])
    reordered = {**task.input, "text": f"{third} {second} {first}"}
    assert sent["messages"][-1]["content"] == PROMPTS["classification"]["answer"].format(
        **reordered
    )


def test_a_task_file_is_read_as_the_trainer_reads_it(tmp_path) -> None:
    good = tmp_path / "tasks.jsonl"
    row = {"id": "t1", "input": {"text": "Rain.", "labels": "weather, food"}, "expected": "weather"}
    good.write_text(json.dumps(row) + "\n")
    (task,) = read_tasks(good)
    assert (task.id, task.input, task.expected) == ("t1", row["input"], "weather")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "t1", "input": {"text": "x"}}) + "\n")
    with pytest.raises(TaskFileError, match=r"bad.jsonl:1: task is unlabeled"):
        read_tasks(bad)
