"""benchmarks/optimization/probes/apo_edits.py: how an editor's answer is read, now and before."""

from __future__ import annotations

from benchmarks.optimization.probes.apo_edits import reading
from benchmarks.optimization.workflows import PROMPTS

ITEM = PROMPTS["extraction"]["item"]


def test_a_quoted_original_then_a_rewrite():
    rewrite = "Text:\n{text}\n\nGive the {field} exactly as the text writes it."
    answer = f"The template <<<{ITEM}>>> gets first names. Better:\n<<<{rewrite}>>>"
    assert reading(answer, ITEM, with_original=True) == f"edit: {rewrite!r}"
    assert reading(answer, ITEM, with_original=False) == "unchanged"


def test_a_rewrite_without_the_text_is_rejected_either_way():
    answer = "<<<What is the {field}? Reply with the value.>>>"
    for with_original in (True, False):
        assert reading(answer, ITEM, with_original=with_original) == (
            "rejected: the edit drops placeholder(s) ['text']"
        )
