"""Smoke run of ``lightspan train run`` with the real local model (SmolLM2 by default), kept
small: a few easy questions, the cost algorithm through the store and in-process runners.

What it checks is that the whole path works with real token counts, latencies and finish
reasons (no claim about the size of the gain: that is the benchmark's job).
"""

from __future__ import annotations

import json

import pytest
import yaml

from lightspan.cli import main

pytestmark = pytest.mark.llm

QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("What color is the sky on a clear day?", "blue"),
    ("How many legs does a dog have? Answer with a number.", "4"),
    ("What is the opposite of hot?", "cold"),
    ("What do bees make?", "honey"),
    ("What is the capital of Italy?", "Rome"),
    ("What color is grass?", "green"),
    ("What is frozen water called?", "ice"),
    ("What animal says meow?", "cat"),
]


def test_cost_search_with_the_local_model(llm_server, tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        yaml.safe_dump(
            {
                "workflow": "quiz",
                "evaluator": "tests.trainer.helpers:mentions_expected",
                "resources": {
                    "prompts": {"ask": "{question} Answer in a few words."},
                    "llms": {
                        "default": {
                            "endpoint": llm_server.base_url,
                            "model": llm_server.model,
                            "sampling_parameters": {"max_tokens": 48, "temperature": 0},
                        }
                    },
                },
                "steps": [{"llm": {"name": "answer", "prompt": "ask"}}],
            }
        )
    )
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "input": {"question": q}, "expected": a}) + "\n"
            for i, (q, a) in enumerate(QUESTIONS)
        )
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump({"llm": {"prices": {llm_server.model: {"input": 0.1, "output": 0.4}}}})
    )
    out = tmp_path / "out"
    rc = main(
        [
            "train",
            "run",
            "--workflow",
            str(wf),
            "--tasks",
            str(tasks),
            "--algorithm",
            "cost",
            "--store",
            "in_memory",
            "--runners",
            "2",
            "--min-tasks",
            "3",
            "--out",
            str(out),
            "--config",
            str(cfg),
        ]
    )
    rep = json.loads((out / "report.json").read_text())
    assert rc == 0 and rep["status"] == "completed", rep["notes"]
    b, o = rep["baseline"], rep["optimized"]
    assert b["runs"] == o["runs"] == 3
    assert b["tokens_per_run"] > 10 and b["cost_per_run"] > 0 and b["latency_p50_s"] > 0
    # A change is only kept when it held on test; either way the report says what happened.
    assert rep["decision"]
    if rep["held_on_test"]:
        assert o["cost_per_run"] <= b["cost_per_run"]
    assert rep["trainer_spend"]["rollouts"] >= 9
    assert any(c["label"] != "baseline" for c in rep["candidates"])


def test_apo_with_the_local_model_as_critic_and_editor(llm_server, tmp_path):
    """A 135M critic/editor mostly writes unusable edits: they must be rejected by the
    placeholder check (or scored) and the run must still complete and count its spend."""
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        yaml.safe_dump(
            {
                "workflow": "quiz",
                "evaluator": "tests.trainer.helpers:mentions_expected",
                "resources": {
                    "prompts": {"ask": "{question} Answer in a few words."},
                    "llms": {
                        "default": {
                            "endpoint": llm_server.base_url,
                            "model": llm_server.model,
                            "sampling_parameters": {"max_tokens": 24, "temperature": 0},
                        }
                    },
                },
                "steps": [{"llm": {"name": "answer", "prompt": "ask"}}],
            }
        )
    )
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "input": {"question": q}, "expected": a}) + "\n"
            for i, (q, a) in enumerate(QUESTIONS[:6])
        )
    )
    out = tmp_path / "out"
    rc = main(
        [
            "train",
            "run",
            "--workflow",
            str(wf),
            "--tasks",
            str(tasks),
            "--algorithm",
            "apo",
            "--in-process",
            "--runners",
            "2",
            "--out",
            str(out),
            "--optimizer-endpoint",
            llm_server.base_url,
            "--optimizer-model",
            llm_server.model,
            "--optimizer-max-tokens",
            "96",
            "--beam-width",
            "1",
            "--branch-factor",
            "2",
            "--beam-rounds",
            "1",
            "--gradient-batch-size",
            "2",
            "--val-batch-size",
            "2",
        ]
    )
    rep = json.loads((out / "report.json").read_text())
    assert rc == 0 and rep["status"] == "completed", rep["notes"]
    assert rep["trainer_spend"]["optimizer_calls"] == 1 + 2 * 2
    assert rep["trainer_spend"]["optimizer_tokens"] > 0
    # Each of the 2 proposals is accounted for: rejected, unchanged, or scored as a child.
    rejected = [n for n in rep["notes"] if n.startswith("rejected edit of ask")]
    unchanged = [n for n in rep["notes"] if n.startswith("edit of ask left it unchanged")]
    scored = [c for c in rep["candidates"] if c["label"] == "apo r1: edit of ask"]
    assert len(rejected) + len(unchanged) + len(scored) == 2
    assert "{question}" in rep["resources"]["ask"]["template"]
