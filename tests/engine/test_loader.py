"""Workflows from YAML: what loads, and errors that name the step and the field."""

from __future__ import annotations

import textwrap

import pytest

from lightspan.engine import WorkflowDefinitionError, load_workflow, workflow_from_dict

GOOD = """
workflow: numbers
evaluator: tests.engine.helpers:exact
resources:
  id: rs-yaml
  prompts:
    ask: "Q: {question}"
  llms:
    default: {endpoint: "http://127.0.0.1:1/v1", model: m, sampling_parameters: {max_tokens: 8}}
steps:
  - task: {name: one, call: "tests.engine.helpers:add_one", timeout: 5, retry: {max_attempts: 2}}
  - fork:
      name: both
      join: {quorum: 2}
      reducer: "tests.engine.helpers:total"
      branches:
        - task: {name: a, call: "tests.engine.helpers:double"}
        - task: {name: b, call: "tests.engine.helpers:add_one"}
  - organizer_worker:
      name: fan
      concurrency: 2
      reducer: "tests.engine.helpers:total"
      organizer: {task: {name: plan, call: "tests.engine.helpers:plan"}}
      worker: {task: {name: w, call: "tests.engine.helpers:double"}}
"""


def write(tmp_path, text: str):
    p = tmp_path / "wf.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_good_file_loads_and_runs(tmp_path):
    w = load_workflow(write(tmp_path, GOOD))
    r = w.run_sync(1, expected=2 * sum(range(7)))
    # 1 -> 2 -> fork (4, 3) -> 7 -> plan 0..6 doubled -> sum
    assert r.ok, r.error
    assert r.output == 2 * sum(range(7)) and r.reward == 1.0
    assert r.resources_id == "rs-yaml"
    kinds = [s.kind for s in w.steps()]
    assert kinds.count("fork") == 1 and kinds.count("organizer_worker") == 1


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            ('call: "tests.engine.helpers:add_one", timeout: 5', "cal: x, timeout: 5"),
            r"steps\[0\] \(task 'one'\): unknown key 'cal'",
        ),
        (
            ("timeout: 5", "timeout: -1"),
            r"steps\[0\] \(task 'one'\)\.timeout: must be a number > 0",
        ),
        (
            ("join: {quorum: 2}", "join: {quorum: 3}"),
            r"steps\[1\] \(fork 'both'\).*quorum\(3\) needs more branches",
        ),
        (
            ("join: {quorum: 2}", "join: most"),
            r"steps\[1\] \(fork 'both'\)\.join: expected all, first",
        ),
        (
            ("- task: {name: a, call", "- tsk: {name: a, call"),
            r"steps\[1\] \(fork 'both'\) > branches\[0\]: unknown step kind 'tsk'",
        ),
        (
            ("helpers:plan", "helpers:nope"),
            r"organizer.*\(task 'plan'\)\.call: module 'tests.engine.helpers' has no 'nope'",
        ),
        (("helpers:plan", "helpers:NOT_CALLABLE"), r"is not callable"),
        (
            ("concurrency: 2", "concurrency: two"),
            r"\(organizer_worker 'fan'\)\.concurrency: expected an integer",
        ),
        (
            ("retry: {max_attempts: 2}", "retry: {max_attempts: 0}"),
            r"\(task 'one'\)\.retry: .*max_attempts",
        ),
        (("retry: {max_attempts: 2}", "retry: {tries: 2}"), r"\.retry: unknown key 'tries'"),
        (
            ("tests.engine.helpers:exact", "no.such.module:f"),
            r"evaluator: cannot import module 'no.such.module'",
        ),
    ],
)
def test_errors_name_step_and_field(tmp_path, patch, message):
    old, new = patch
    assert old in GOOD
    with pytest.raises(WorkflowDefinitionError, match=message) as exc:
        load_workflow(write(tmp_path, GOOD.replace(old, new, 1)))
    assert str(tmp_path / "wf.yaml") in str(exc.value)


def test_llm_step_references_are_checked_against_resources():
    data = {
        "workflow": "w",
        "resources": {
            "prompts": {"ask": "hi"},
            "llms": {"default": {"endpoint": "http://x", "model": "m"}},
        },
        "steps": [{"llm": {"name": "q", "prompt": "asks"}}],
    }
    with pytest.raises(
        WorkflowDefinitionError,
        match=r"steps\[0\] \(llm 'q'\)\.prompt: .*no prompt template 'asks'",
    ):
        workflow_from_dict(data)
    data["steps"] = [{"llm": {"name": "q", "prompt": "ask", "llm": "gpt"}}]
    with pytest.raises(WorkflowDefinitionError, match=r"\.llm: .*no llm 'gpt'"):
        workflow_from_dict(data)


def test_resource_errors_name_the_resource():
    data = {"workflow": "w", "resources": {"llms": {"big": {"model": "m"}}}, "steps": []}
    with pytest.raises(
        WorkflowDefinitionError, match="resources.llms.big: missing required key 'endpoint'"
    ):
        workflow_from_dict(data)


def test_top_level_errors(tmp_path):
    with pytest.raises(WorkflowDefinitionError, match="missing required key 'workflow'"):
        workflow_from_dict({"steps": []})
    with pytest.raises(WorkflowDefinitionError, match="unknown key 'stepz'"):
        workflow_from_dict({"workflow": "w", "stepz": []})
    with pytest.raises(WorkflowDefinitionError, match="exactly one of 'steps'"):
        workflow_from_dict({"workflow": "w"})
    p = tmp_path / "bad.yaml"
    p.write_text("workflow: [unclosed")
    with pytest.raises(WorkflowDefinitionError, match="not valid YAML"):
        load_workflow(p)
    with pytest.raises(WorkflowDefinitionError, match="cannot read workflow file"):
        load_workflow(tmp_path / "missing.yaml")
