"""Agent Lightning 0.3's own client and adapters read the spans of the trainer's rollouts
(run in its virtualenv, as tests/store/test_interop_agl.py does): the same final reward, the
prompt/answer messages the critic sees, one triplet per LLM call with the reward on it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from lightspan.store.api.client import LightningStoreClient
from lightspan.trainer.data import load_tasks
from lightspan.trainer.evaluation.store_eval import StoreEvaluator
from tests.store.servers import StoreProcess

from .conftest import PRICES, write_tasks, write_workflow

pytestmark = pytest.mark.interop

AGL_PYTHON = (
    Path(
        os.environ.get("LIGHTSPAN_AGL_VENV", Path.home() / ".cache/lightspan/agl-venv")
    ).expanduser()
    / "bin"
    / "python"
)


def test_agl_adapters_read_trainer_rollouts(arith_llm, tmp_path):
    if not AGL_PYTHON.exists():
        pytest.fail(
            f"Agent Lightning interop venv missing ({AGL_PYTHON}); run "
            ".ci/setup.d/40-agl-interop.sh",
            pytrace=False,
        )
    server = StoreProcess("sqlite", str(tmp_path / "s.db")).start()
    try:

        async def run():
            async with LightningStoreClient(server.address) as store:
                ev = StoreEvaluator(
                    write_workflow(tmp_path, arith_llm.base_url, max_tokens=6),
                    store,
                    prices=PRICES,
                    runners=2,
                    poll_interval=0.05,
                )
                await ev.start()
                try:
                    base = (await ev.workflow.resources.get_resources()).to_dict()
                    results = await ev.evaluate(base, load_tasks(write_tasks(tmp_path, 3)))
                finally:
                    await ev.aclose()
                ids = [r.rollout_id for r in (await store.query_rollouts()).items]
                return ids, results

        ids, results = asyncio.run(run())
        proc = subprocess.run(
            [
                str(AGL_PYTHON),
                str(Path(__file__).parent / "agl_read_spans.py"),
                server.address,
                *ids,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        agl = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        server.stop()
    # max_tokens=6 cuts "the answer is N and ..." after the answer: rewards 1 (t0: 0+0 -> 0).
    assert sorted(v["reward"] for v in agl.values()) == sorted(r.reward for r in results)
    for v in agl.values():
        assert v["messages"] == 1 and v["triplets"] == 1 and v["triplet_rewards"] == [v["reward"]]
        user, answer = v["first_messages"]["messages"]
        assert user["role"] == "user" and user["content"].startswith("Compute ")
        assert answer["role"] == "assistant" and answer["content"].startswith("the answer is")
