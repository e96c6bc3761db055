"""A ``plan -> format`` workflow trained on a scripted evaluator: the shared set-up of the
fallback and route tests (``test_fallback.py``, ``test_route.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightspan.engine import Workflow, llm_task, sequence
from lightspan.trainer.data import Task
from lightspan.trainer.evaluation.evaluate import Evaluator
from lightspan.trainer.run import TrainOptions, train
from lightspan.trainer.search.cost import ModelOption

URL = "http://127.0.0.1:1/v1"
BASE = {
    "llm": {
        "resource_type": "llm",
        "endpoint": URL,
        "model": "big",
        "sampling_parameters": {"max_tokens": 100},
    },
    "p": {"resource_type": "prompt_template", "template": "Q {x}", "engine": "f-string"},
}


async def train_plan_format(
    tmp_path: Path, evaluator: Evaluator, tasks: list[Task], **options: Any
) -> tuple[dict[str, Any], list[Any]]:
    """``train`` with every step on ``big`` and ``mini`` in the catalog, ``--keep-model-first``;
    returns the report and what was published."""
    wf = Workflow(
        "plan-format",
        sequence(
            "s", llm_task("plan", prompt="p", llm="llm"), llm_task("format", prompt="p", llm="llm")
        ),
    )
    published: list[Any] = []

    async def publish(res: Any) -> str:
        published.append(res)
        return "v1"

    rep = await train(
        evaluator=evaluator,
        workflow=wf,
        baseline=BASE,
        tasks=tasks,
        catalog=[ModelOption(URL, "mini")],
        price=lambda m: None,
        options=TrainOptions(keep_model_first=True, min_tasks=4, **options),
        out=tmp_path,
        publish=publish,
    )
    return rep, published
