"""The runner against Agent Lightning 0.3.0's own ``agl store`` server (interop venv)."""

from __future__ import annotations

import pytest

from lightspan.runner import ResourcesProvider, WorkflowRunner
from lightspan.store import PromptTemplate as StorePrompt
from lightspan.store.api.client import LightningStoreClient
from tests.fixtures.fake_llm import FakeLLM
from tests.runner.workflows import qa_workflow
from tests.store.test_interop_agl import agl_bin, agl_store, agl_store_process  # noqa: F401

pytestmark = pytest.mark.interop


async def test_runner_serves_rollouts_from_agl_store(agl_store: str, fake_llm: FakeLLM) -> None:  # noqa: F811
    async with LightningStoreClient(agl_store, retries=1, backoff=0.05) as client:
        published = await client.update_resources(
            "qa:agl", {"ask": StorePrompt(template="AGL {q}", engine="f-string")}
        )
        rows = [{"input": {"q": f"a{i}"}, "expected": f"AGL a{i}"} for i in range(3)]
        ids = [
            (
                await client.enqueue_rollout(r, mode="val", resources_id=published.resources_id)
            ).rollout_id
            for r in rows
        ]
        wf = qa_workflow(fake_llm.base_url)
        runner = WorkflowRunner(wf, client, workers=2, worker_id_prefix="agl-interop")
        stats = await runner.serve(max_rollouts=3)
        await wf.aclose()
        assert stats.succeeded == 3 and stats.store_errors == 0, stats
        # agl store has no exchange extension: the runner fell back to the v0.3 calls
        assert client.exchange_supported is False
        done = await client.wait_for_rollouts(rollout_ids=ids, timeout=5)
        assert sorted(r.status for r in done) == ["succeeded"] * 3
        for rid in ids:
            spans = (await client.query_spans(rid, "latest")).items
            names = [s.name for s in spans]
            assert (
                "openai.chat.completion" in names and names.count("agentlightning.annotation") == 1
            )
            llm = next(s for s in spans if s.name == "openai.chat.completion")
            assert llm.attributes["gen_ai.prompt.0.content"].startswith("AGL a")
            reward = next(s for s in spans if s.name == "agentlightning.annotation")
            assert reward.attributes["agentlightning.reward.0.value"] == 1.0
        workers = {w.worker_id for w in (await client.query_workers()).items}
        assert {"agl-interop-0", "agl-interop-1"} <= workers
        # "the latest set of this workflow" through agl's resources query
        await client.update_resources(
            "other:x", {"ask": StorePrompt(template="X {q}", engine="f-string")}
        )
        latest = await ResourcesProvider(client, "qa").latest_update()
        assert latest is not None and latest.resources_id == "qa:agl"
