"""Three workflow shapes x three task families, as workflow files (YAML structures).

Shapes:

- ``sequence``: plan -> solve -> format (three LLM steps, glue tasks carry the run input).
- ``vote``: a fork of three sampled branches on the same prompt, joined by a majority vote
  (``join: all``, the first draft; ``vote_join="majority"``: the third branch starts only when
  the first two disagree, see the engine's ``join: majority``).
- ``organizer_worker``: split the task into items -> one LLM call per item -> merge.

Why workflow files rather than Python objects: ``lightspan run`` and ``lightspan train run``
load the very same file the benchmark runs, so the trainer optimizes what is measured.
Every LLM step has its own LLM resource (named like the step), so a configuration can put
each step on its own model and ``max_tokens``; that per-step choice is the search grid.

The baseline is what a user would write first: every step on the strongest model, a
generous ``max_tokens``, and the first prompt that comes to mind (below, unpolished).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightspan.engine import Workflow, workflow_from_dict

SHAPES: tuple[str, ...] = ("sequence", "vote", "organizer_worker")
M = "benchmarks.optimization.steps"
E = "benchmarks.optimization.evaluators"

# The first-draft prompts, per family: `plan`/`solve`/`format` (sequence), `answer` (vote),
# `item` (organizer-worker).
PROMPTS: dict[str, dict[str, str]] = {
    "arithmetic": {
        "plan": "Here is a math word problem:\n{question}\n\nWrite a short plan for how to solve it.",
        "solve": "Problem:\n{question}\n\nPlan:\n{plan}\n\nFollow the plan and solve the problem step by step.",
        "format": "Here is a worked solution to a math problem:\n{solution}\n\nWhat is the final answer? Reply with only the number.",
        "answer": "Solve this math word problem step by step, then give the final answer as a number on the last line.\n\n{question}",
        "item": 'Here is a math word problem:\n{question}\n\nLook only at this sentence from it: "{sentence}"\nBy how much does this sentence change the number asked about? The first sentence gives the starting amount. Reply with a signed number such as +12 or -5.',
    },
    "extraction": {
        "plan": "I need to extract these fields: {fields}\nfrom this text:\n{text}\n\nWrite a plan for finding each field.",
        "solve": "Text:\n{text}\n\nFields: {fields}\n\nPlan:\n{plan}\n\nFind the value of each field in the text.",
        "format": "Turn these findings into a JSON object with the keys {fields} (numbers as numbers):\n{solution}\n\nReply with only the JSON object.",
        "answer": "Extract the fields {fields} from the text below and reply with a JSON object with exactly those keys.\n\n{text}",
        "item": "Text:\n{text}\n\nWhat is the {field} in this text? Reply with only the value.",
    },
    "classification": {
        "plan": "I need to classify this text into one of these topics: {labels}.\n\nText: {text}\n\nWrite a plan for deciding the topic.",
        "solve": "Text: {text}\nTopics: {labels}\n\nPlan:\n{plan}\n\nFollow the plan and decide which topic fits best.",
        "format": "Here is an analysis of the topic of a text:\n{solution}\n\nWhich topic was chosen? Reply with exactly one word from: {labels}.",
        "answer": "Classify the text into one of these topics: {labels}.\n\nText: {text}\n\nReply with the topic.",
        "item": "Which of these topics does the sentence belong to: {labels}?\n\nSentence: {sentence}\n\nReply with the topic.",
    },
}
_VOTE_REDUCER = {
    "arithmetic": "vote_number",
    "extraction": "vote_json",
    "classification": "vote_label",
}
_VOTE_AGREE = {
    "arithmetic": "agree_number",
    "extraction": "agree_json",
    "classification": "agree_label",
}
VOTE_JOINS: tuple[str, ...] = ("all", "majority")
_OW = {
    "arithmetic": ("split_arithmetic", "merge_arithmetic"),
    "extraction": ("split_fields", "merge_fields"),
    "classification": ("split_sentences", "merge_labels"),
}
_REWARD = {
    "arithmetic": "arithmetic_reward",
    "extraction": "extraction_reward",
    "classification": "classification_reward",
}
VOTE_BRANCHES: tuple[str, ...] = ("branch_a", "branch_b", "branch_c")
LLM_STEPS: dict[str, tuple[str, ...]] = {
    "sequence": ("plan", "solve", "format"),
    "vote": VOTE_BRANCHES,
    "organizer_worker": ("worker",),
}
VOTE_TEMPERATURE = 0.7


@dataclass(frozen=True, slots=True, order=True)
class StepChoice:
    """What one LLM step runs on: a model (registry name) and its ``max_tokens``."""

    model: str
    max_tokens: int

    def __str__(self) -> str:
        return f"{self.model}@{self.max_tokens}"


Config = Mapping[str, StepChoice]
"""LLM step name -> its choice."""


def config_key(config: Config) -> str:
    """A stable text form of a configuration (cache key, report label)."""
    return ";".join(f"{step}={config[step]}" for step in sorted(config))


def uniform_config(shape: str, choice: StepChoice) -> dict[str, StepChoice]:
    return dict.fromkeys(LLM_STEPS[shape], choice)


def _sampling(shape: str, step: str, choice: StepChoice) -> dict[str, Any]:
    if shape == "vote":  # self-consistency: sampled, a fixed seed per branch (reproducible)
        seed = VOTE_BRANCHES.index(step) + 1
        return {"max_tokens": choice.max_tokens, "temperature": VOTE_TEMPERATURE, "seed": seed}
    return {"max_tokens": choice.max_tokens, "temperature": 0.0}


def _llm(name: str, prompt: str) -> dict[str, Any]:
    return {"llm": {"name": name, "prompt": prompt, "llm": llm_resource(name)}}


def llm_resource(step: str) -> str:
    """The LLM resource of an LLM step (resources share one namespace with the prompts)."""
    return f"{step}_llm"


def _root(family: str, shape: str, vote_join: str = "all") -> dict[str, Any]:
    if shape == "sequence":
        return {
            "sequence": {
                "name": "plan-solve-format",
                "steps": [
                    _llm("plan", "plan"),
                    {"task": {"name": "with_plan", "call": f"{M}:carry_plan"}},
                    _llm("solve", "solve"),
                    {"task": {"name": "with_solution", "call": f"{M}:carry_solution"}},
                    _llm("format", "format"),
                ],
            }
        }
    if shape == "vote":
        if vote_join not in VOTE_JOINS:
            raise ValueError(f"unknown vote join {vote_join!r}; known: {', '.join(VOTE_JOINS)}")
        fork: dict[str, Any] = {
            "name": "vote",
            "join": vote_join,
            "reducer": f"{M}:{_VOTE_REDUCER[family]}",
            "branches": [_llm(b, "answer") for b in VOTE_BRANCHES],
        }
        if vote_join == "majority":
            fork["agree"] = f"{M}:{_VOTE_AGREE[family]}"
        return {"fork": fork}
    if shape == "organizer_worker":
        split, merge = _OW[family]
        return {
            "sequence": {
                "name": "split-work-merge",
                "steps": [
                    {
                        "organizer_worker": {
                            "name": "per-item",
                            "concurrency": 4,
                            "organizer": {"task": {"name": "split", "call": f"{M}:{split}"}},
                            "worker": _llm("worker", "item"),
                        }
                    },
                    {"task": {"name": "merge", "call": f"{M}:{merge}"}},
                ],
            }
        }
    raise ValueError(f"unknown workflow shape {shape!r}; known: {', '.join(SHAPES)}")


def workflow_spec(
    family: str,
    shape: str,
    config: Config,
    endpoints: Mapping[str, str],
    *,
    vote_join: str = "all",
) -> dict[str, Any]:
    """The workflow file's structure for ``family`` x ``shape`` under ``config``.

    ``endpoints`` maps a model name to its OpenAI-compatible base URL; ``vote_join`` is the
    vote's join (other shapes ignore it).
    """
    if family not in PROMPTS:
        raise ValueError(f"unknown task family {family!r}; known: {', '.join(PROMPTS)}")
    if shape not in LLM_STEPS:
        raise ValueError(f"unknown workflow shape {shape!r}; known: {', '.join(SHAPES)}")
    missing = set(LLM_STEPS[shape]) - set(config)
    if missing:
        raise ValueError(f"config for {shape!r} lacks LLM steps {sorted(missing)}")
    llms = {}
    for step in LLM_STEPS[shape]:
        choice = config[step]
        if choice.model not in endpoints:
            raise ValueError(f"no endpoint for model {choice.model!r} (have {sorted(endpoints)})")
        llms[llm_resource(step)] = {
            "endpoint": endpoints[choice.model],
            "model": choice.model,
            "sampling_parameters": _sampling(shape, step, choice),
        }
    prompts = PROMPTS[family]
    used = {"sequence": ("plan", "solve", "format"), "vote": ("answer",)}.get(shape, ("item",))
    return {
        "workflow": f"{family}-{shape}",
        "evaluator": f"{E}:{_REWARD[family]}",
        "resources": {
            "id": f"{family}-{shape}:{config_key(config)}",
            "prompts": {name: prompts[name] for name in used},
            "llms": llms,
        },
        "root": _root(family, shape, vote_join),
    }


def build_workflow(
    family: str,
    shape: str,
    config: Config,
    endpoints: Mapping[str, str],
    *,
    vote_join: str = "all",
    **kw: Any,
) -> Workflow:
    """The engine workflow for ``workflow_spec(...)`` (validated by the YAML loader)."""
    spec = workflow_spec(family, shape, config, endpoints, vote_join=vote_join)
    return workflow_from_dict(spec, source=f"<{spec['workflow']}>", **kw)


def write_workflow_file(
    path: Path,
    family: str,
    shape: str,
    config: Config,
    endpoints: Mapping[str, str],
    *,
    vote_join: str = "all",
) -> Path:
    """Write the workflow as YAML (what ``lightspan run`` / ``lightspan train run`` load)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = workflow_spec(family, shape, config, endpoints, vote_join=vote_join)
    path.write_text(yaml.safe_dump(spec, sort_keys=False, width=100))
    return path
