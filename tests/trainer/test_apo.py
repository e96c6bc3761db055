"""APO's beam search with a scripted optimizer (critic/editor) and the fake arithmetic LLM."""

from __future__ import annotations

import itertools

import pytest

from lightspan.trainer.data import load_tasks, split_tasks
from lightspan.trainer.evaluation.evaluate import InProcessEvaluator
from lightspan.trainer.search.apo import APOSearch, clean_edit, copied_markup
from lightspan.trainer.search.optimizer_llm import OptimizerLLM, OptimizerUnavailable

from .conftest import PRICES, write_tasks, write_workflow


class ScriptedOptimizer:
    """Critiques say "be brief"; edits cycle through a bad and a good rewrite."""

    def __init__(self, edits):
        self.edits = itertools.cycle(edits)
        self.prompts = []

    async def chat(self, prompt, *, temperature=0.7):
        self.prompts.append(prompt)
        if "Feedback:" in prompt:
            return next(self.edits)
        return "The answers ramble; ask for a brief answer."


@pytest.mark.parametrize("lam", [0.0, 2000.0])
async def test_apo_keeps_placeholders_and_uses_the_cost_term(arith_llm, tmp_path, lam):
    path = write_workflow(tmp_path, arith_llm.base_url)
    split = split_tasks(load_tasks(write_tasks(tmp_path, 20)), seed=0)
    ev = InProcessEvaluator(path, prices=PRICES)
    base = (await ev.load().resources.get_resources()).to_dict()
    opt = ScriptedOptimizer(
        [
            "Compute the sum.",  # drops {question}
            "```\nCompute {question} for {user}.\n```",  # adds {user}
            "<<<Compute {question}. Reply briefly.>>>",  # good
        ]
    )
    apo = APOSearch(
        ev,
        opt,
        beam_width=2,
        branch_factor=3,
        beam_rounds=1,
        gradient_batch_size=2,
        val_batch_size=4,
        cost_lambda=lam,
    )
    out = await apo.run(base, split.train, split.val)
    assert apo.rejected_edits == 2
    assert any("drops placeholder(s) ['question']" in n for n in out.notes)
    assert any("adds placeholder(s) ['user']" in n for n in out.notes)
    # The report quotes what the editor said, so a reader can tell why an edit went nowhere.
    assert any("(the editor answered 'Compute the sum.')" in n for n in out.notes)
    critic = opt.prompts[0]
    assert "Compute {question}." in critic and "reward=" in critic  # traces reach the critic
    if lam:
        # Same reward, a fifth of the cost: the cost term makes the brief edit win.
        assert out.best["solve"]["template"] == "Compute {question}. Reply briefly."
    else:
        assert out.best == base  # no reward gain: the seed stays (ties keep the incumbent)
    assert [r["round"] for r in out.best_per_round] == [0, 1]


def test_clean_edit_strips_wrappers():
    assert clean_edit("```text\nHi {x}\n```") == "Hi {x}"
    assert clean_edit('New template: "Hi {x}"') == "Hi {x}"
    assert clean_edit("<<<Hi {x}>>>") == "Hi {x}"
    assert clean_edit("```\n<<<Hi {x}>>>\n```") == "Hi {x}"
    # Half a wrapper (the editor forgot the other half) is a wrapper too.
    assert clean_edit("<<<Hi {x}, exactly as written?") == "Hi {x}, exactly as written?"
    assert clean_edit("Hi {x} >>>") == "Hi {x}"
    # A block closed with two brackets, followed by the editor's comments.
    assert clean_edit("<<<Hi {x} of the text?>> Feedback: 1. Add context.") == "Hi {x} of the text?"


def test_clean_edit_takes_the_rewrite_not_the_quoted_original():
    """An editor may quote the template before its rewrite; the rewrite is the edit."""
    original = "What is the {field}? Reply with only the value."
    answer = (
        f"The template <<<{original}>>> gives first names. Improved:\n"
        "<<<What is the {field}? Give it exactly as written, e.g. a full name.>>>"
    )
    assert clean_edit(answer, original).endswith("e.g. a full name.")
    fenced = f"Original:\n```\n{original}\n```\nNew:\n```text\nName the {{field}}.\n```"
    assert clean_edit(fenced, original) == "Name the {field}."
    # A draft, then the final rewrite: the last block that changes the template is the edit.
    drafts = "Draft: <<<Name the {field}.>>> Final: <<<Name the {field} exactly as written.>>>"
    assert clean_edit(drafts, original) == "Name the {field} exactly as written."
    # Every block repeats the original (or is empty): unchanged, so APO does not try it.
    assert clean_edit(f"<<<{original}>>> <<<>>>", original) == original


async def test_an_edit_copying_the_editor_prompts_markup_is_rejected(arith_llm, tmp_path):
    """The APO probe's garbage answer: an unclosed <<< and a train run's transcript, with the
    placeholders kept. It is rejected before any rollout, and the note says why."""
    path = write_workflow(tmp_path, arith_llm.base_url)
    tasks = load_tasks(write_tasks(tmp_path, 4))
    ev = InProcessEvaluator(path, prices=PRICES)
    base = (await ev.load().resources.get_resources()).to_dict()
    # The probe's answer: the runs' "---" separator and a run's text after an unclosed <<<.
    garbage = "<<<Compute {question}. \n---\n\n prompt: Compute 3 + 4.\n answer: 7"
    apo = APOSearch(ev, ScriptedOptimizer([garbage]))
    assert await apo.propose(base, "solve", tasks) is None
    assert apo.rejected_edits == 1
    assert any("copies the editor prompt's markup ('\\n---\\n')" in n for n in apo.outcome.notes), (
        apo.outcome.notes
    )
    transcript = "Compute {question}.\n[solve] prompt: Compute 3 + 4.\n[solve] answer: 7"
    assert "'] prompt: ', '] answer: '" in (copied_markup(transcript) or "")
    assert copied_markup("Compute {question}. Reply with the number only.") is None
    assert copied_markup("Compute {question} >>> now") is not None
    assert copied_markup("Run >>> {code} and say what it prints", "Run >>> {code}") is None


async def test_unreachable_optimizer_is_a_clear_error(unused_port):
    opt = OptimizerLLM(f"http://127.0.0.1:{unused_port}/v1", "m")
    with pytest.raises(OptimizerUnavailable, match=f"127.0.0.1:{unused_port}"):
        await opt.check()
    await opt.aclose()
