"""Placeholder checks of template edits and per-step resource keys."""

from __future__ import annotations

import pytest

from lightspan.trainer.resmap import check_template_edit, resolve, with_step_resource


@pytest.mark.parametrize(
    ("edited", "problem"),
    [
        ("Answer {question} now.", None),
        ("Answer {question} for {user}.", "adds placeholder(s) ['user']"),
        ("Answer the question.", "drops placeholder(s) ['question']"),
        ("Answer {question", "no longer formats"),
        ("Answer {} please {question}", "no longer formats"),
        ("   ", "empty"),
    ],
)
def test_template_edit_checks(edited, problem):
    why = check_template_edit("Please answer {question}.", edited)
    if problem is None:
        assert why is None
    else:
        assert why is not None and problem in why


def test_jinja_edits_compare_variables():
    assert check_template_edit("Hi {{ name }}", "Hello {{ name }}!", "jinja") is None
    assert "placeholders changed" in check_template_edit("Hi {{ name }}", "Hi", "jinja")


def test_per_step_key_overrides_only_that_step():
    base = {"default": {"resource_type": "llm", "model": "a"}}
    res = with_step_resource(base, "default", "solve", {"resource_type": "llm", "model": "b"})
    assert resolve(res, "default", "solve") == "default@solve"
    assert resolve(res, "default", "other") == "default"
    assert base == {"default": {"resource_type": "llm", "model": "a"}}
