"""``--algorithm downshift`` against the fake arithmetic LLM: the step moves to ``small`` (right
only on even sums unless asked to work carefully), APO edits the prompt for it, and the val
gate keeps the result only if it holds the baseline's reward."""

from __future__ import annotations

from lightspan.trainer.data import load_tasks
from lightspan.trainer.evaluation.evaluate import InProcessEvaluator
from lightspan.trainer.run import TrainOptions, train
from lightspan.trainer.search.cost import ModelOption
from lightspan.trainer.search.downshift import downshift

from .conftest import PRICES, write_tasks, write_workflow
from .test_apo import ScriptedOptimizer


def _prices(m):
    p = PRICES.get(m)
    return (p["input"], p["output"]) if p else None


async def _train(arith_llm, tmp_path, edit: str):
    path = write_workflow(tmp_path, arith_llm.base_url)
    ev = InProcessEvaluator(path, prices=PRICES, concurrency=4)
    wf = ev.load()
    base = (await wf.resources.get_resources()).to_dict()
    opt = ScriptedOptimizer([edit])
    rep = await train(
        evaluator=ev,
        workflow=wf,
        baseline=base,
        tasks=load_tasks(write_tasks(tmp_path, 30)),
        catalog=[ModelOption(arith_llm.base_url, "small")],
        price=_prices,
        options=TrainOptions(
            algorithm="downshift",
            apo={"beam_rounds": 1, "branch_factor": 1, "gradient_batch_size": 4},
        ),
        out=tmp_path / "out",
        optimizer=opt,
    )
    return rep, opt


async def test_downshift_keeps_the_cheap_model_when_apo_repairs_its_prompt(arith_llm, tmp_path):
    rep, opt = await _train(arith_llm, tmp_path, "<<<Compute {question}. Work carefully.>>>")
    assert rep["resources"]["default@solve"]["model"] == "small"
    assert rep["resources"]["solve"]["template"] == "Compute {question}. Work carefully."
    assert rep["decision"].startswith("held on test: cheaper")
    assert "downshift: solve: model=small, then apo on its prompts" in rep["notes"]
    # APO's critic read the cheap model's runs (its wrong answers), not the baseline's.
    assert any("it is" in p and "reward=0.00" in p for p in opt.prompts if "Feedback" not in p)


async def test_downshift_keeps_the_baseline_when_apo_cannot_repair(arith_llm, tmp_path):
    rep, _ = await _train(arith_llm, tmp_path, "<<<Compute {question}, please.>>>")
    assert rep["resources"]["default"]["model"] == "big"
    assert rep["decision"] == "no change beat the baseline; baseline kept"
    gate = [n for n in rep["notes"] if n.startswith("downshift: reward")]
    assert gate and gate[0].endswith("below -0.02; baseline kept"), gate


def test_downshift_moves_the_costliest_step_with_a_cheaper_model(arith_llm, tmp_path):
    """No cheaper model in the catalog: nothing to move."""
    from lightspan.trainer.resmap import llm_steps

    ev = InProcessEvaluator(write_workflow(tmp_path, arith_llm.base_url), prices=PRICES)
    wf = ev.load()
    base = {"default": {"endpoint": "e", "model": "small"}, "solve": {"template": "x"}}
    assert downshift(base, llm_steps(wf), [], [ModelOption("e", "big")], _prices) is None
