"""The benchmark's workflow files: every family x shape loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.optimization.tasks import FAMILIES
from benchmarks.optimization.workflows import (
    LLM_STEPS,
    SHAPES,
    StepChoice,
    build_workflow,
    config_key,
    uniform_config,
    workflow_spec,
    write_workflow_file,
)

from lightspan.engine import LLMTask, load_workflow

ENDPOINTS = {"small": "http://127.0.0.1:1/v1", "big": "http://127.0.0.1:2/v1"}


def _llm_tasks(step) -> list[LLMTask]:
    found = [step] if isinstance(step, LLMTask) else []
    for child in step.children():
        found += _llm_tasks(child)
    return found


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_family_and_shape_loads_from_yaml(family: str, shape: str, tmp_path: Path) -> None:
    config = uniform_config(shape, StepChoice("big", 512))
    path = write_workflow_file(tmp_path / "wf.yaml", family, shape, config, ENDPOINTS)
    wf = load_workflow(path)
    assert wf.name == f"{family}-{shape}"
    steps = _llm_tasks(wf.root)
    assert sorted(s.name for s in steps) == sorted(LLM_STEPS[shape])
    assert build_workflow(family, shape, config, ENDPOINTS).name == wf.name


def test_config_puts_each_step_on_its_own_model() -> None:
    config = {
        "plan": StepChoice("small", 64),
        "solve": StepChoice("big", 256),
        "format": StepChoice("small", 16),
    }
    spec = workflow_spec("arithmetic", "sequence", config, ENDPOINTS)
    llms = spec["resources"]["llms"]
    assert llms["plan_llm"]["model"] == "small"
    assert llms["solve_llm"]["endpoint"] == ENDPOINTS["big"]
    assert llms["format_llm"]["sampling_parameters"]["max_tokens"] == 16
    assert config_key(config) == "format=small@16;plan=small@64;solve=big@256"


def test_vote_branches_sample_with_distinct_seeds() -> None:
    spec = workflow_spec(
        "classification", "vote", uniform_config("vote", StepChoice("big", 8)), ENDPOINTS
    )
    seeds = {v["sampling_parameters"]["seed"] for v in spec["resources"]["llms"].values()}
    assert len(seeds) == 3


def test_bad_configs_are_named() -> None:
    with pytest.raises(ValueError, match="lacks LLM steps"):
        workflow_spec("arithmetic", "sequence", {"plan": StepChoice("big", 8)}, ENDPOINTS)
    with pytest.raises(ValueError, match="no endpoint for model 'huge'"):
        workflow_spec(
            "arithmetic", "organizer_worker", {"worker": StepChoice("huge", 8)}, ENDPOINTS
        )
    with pytest.raises(ValueError, match="unknown workflow shape"):
        workflow_spec("arithmetic", "loop", {}, ENDPOINTS)


# Per family: two texts the vote counts as one answer, a third it does not, its reducer.
SAME_ANSWER = {
    "arithmetic": ("so 12 apples\n12", "12.0", "13", "vote_number"),
    "extraction": (
        '```json\n{"Name": "Ann Lee", "age": 3}\n```',
        '{"name": "ann lee.", "age": "3"}',
        '{"name": "Bo"}',
        "vote_json",
    ),
    "classification": ("Topic: sports", "sports.", "food", "vote_label"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_majority_vote_file_compares_answers_as_the_reducer_does(
    family: str, tmp_path: Path
) -> None:
    from benchmarks.optimization import steps

    config = uniform_config("vote", StepChoice("big", 64))
    path = write_workflow_file(
        tmp_path / "wf.yaml", family, "vote", config, ENDPOINTS, vote_join="majority"
    )
    fork = load_workflow(path).root
    first, same, other, reducer = SAME_ANSWER[family]
    assert str(fork.join) == "majority" and fork.reducer is getattr(steps, reducer)
    assert fork.agree(first) is not None and fork.agree(first) == fork.agree(same)
    assert fork.agree(other) != fork.agree(first)
    assert workflow_spec(family, "vote", config, ENDPOINTS)["root"]["fork"]["join"] == "all"
    with pytest.raises(ValueError, match="unknown vote join 'most'"):
        workflow_spec(family, "vote", config, ENDPOINTS, vote_join="most")
