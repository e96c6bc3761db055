"""``lightspan train run`` against a real store server process: rollouts executed by the
command's runners, the winner published as ``arith:v1`` and adopted by a production process's
resources provider; ``train profile`` / ``history`` / ``rollback`` on the same store."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from lightspan.cli import main
from lightspan.engine import load_workflow
from lightspan.runner import ResourcesProvider
from lightspan.store.api.client import LightningStoreClient
from tests.store.servers import StoreProcess

from .conftest import PRICES, write_tasks, write_workflow


@pytest.fixture
def store_server(tmp_path):
    server = StoreProcess("sqlite", str(tmp_path / "store.db")).start()
    try:
        yield server
    finally:
        server.stop()


async def _production_runs(address, wf_path, n):
    from lightspan.runner.spans import SpanSink, runner_tracing

    _p, buffer, listener = runner_tracing(capture_content=True)
    w = load_workflow(wf_path)
    async with LightningStoreClient(address) as client:
        for i in range(n):
            r = await w.run({"question": f"{i} + 1"}, listeners=(listener,))
            spans = buffer.take(r.rollout_id, r.attempt_id)
            await SpanSink(client).send(spans, r.rollout_id, r.attempt_id)
    await w.aclose()


def test_train_run_through_store_server_publishes_and_is_adopted(
    arith_llm, tmp_path, store_server, capsys
):
    wf = write_workflow(tmp_path, arith_llm.base_url)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"llm": {"prices": PRICES}}))
    asyncio.run(_production_runs(store_server.address, wf, 3))
    out = tmp_path / "out"
    rc = main(
        [
            "train",
            "run",
            "--workflow",
            str(wf),
            "--tasks",
            str(write_tasks(tmp_path, 24)),
            "--algorithm",
            "cost",
            "--store",
            store_server.address,
            "--runners",
            "3",
            "--out",
            str(out),
            "--publish",
            "--config",
            str(cfg),
        ]
    )
    rep = json.loads((out / "report.json").read_text())
    assert rc == 0, rep.get("notes")
    # The production runs' calls inform the search; the trainer's own (mode val) are not them.
    assert "3 stored production run(s) used for statistics" in rep["notes"]
    assert rep["published"] == "arith:v1" and rep["held_on_test"]
    assert rep["optimized"]["cost_per_run"] < rep["baseline"]["cost_per_run"]

    async def adopted() -> str:
        async with LightningStoreClient(store_server.address) as client:
            w = load_workflow(wf)
            ResourcesProvider.attach(w, client)
            res = await w.resources.get_resources()
            return res.resources_id, res.prompt("solve@solve").template

    rid, template = asyncio.run(adopted())
    assert rid == "arith:v1" and "briefly" in template

    capsys.readouterr()
    prof = tmp_path / "profile.json"
    assert (
        main(
            [
                "train",
                "profile",
                "--store",
                store_server.address,
                "--workflow",
                "arith",
                "--json",
                str(prof),
            ]
        )
        == 0
    )
    data = json.loads(prof.read_text())
    assert data["runs"] == rep["trainer_spend"]["rollouts"] + 3
    ids = {r["resources_id"] for r in data["rewards"]}
    cands = {i for i in ids if i.startswith("trainer.arith.cand-")}
    assert len(cands) >= 2 and ids - cands == {"arith-v0"}  # + the production runs' own set
    assert main(["train", "history", "--store", store_server.address, "--workflow", "arith"]) == 0
    assert "arith:v1" in capsys.readouterr().out
