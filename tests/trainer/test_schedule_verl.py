"""The scheduler's lease in the store, and the verl prerequisites message."""

from __future__ import annotations

import json

import pytest
import yaml

from lightspan.cli import main
from lightspan.store.backends.factory import open_store
from lightspan.trainer.publishing.schedule import release, try_acquire
from lightspan.trainer.search.verl import verl_unavailable

from .conftest import PRICES, write_tasks, write_workflow


async def test_two_schedulers_never_train_one_workflow_at_once():
    store = await open_store("memory")
    try:
        pub = {"p": {"resource_type": "prompt_template", "template": "x", "engine": "f-string"}}
        await store.update_resources("wf:v1", pub)
        ok, why = await try_acquire(store, "wf", 86400, "a", settle_s=0)
        assert ok, why
        ok, why = await try_acquire(store, "wf", 86400, "b", settle_s=0)
        assert not ok and "another scheduler (a)" in why
        await release(store, "wf", "a", {"status": "completed", "published": None})
        ok, why = await try_acquire(store, "wf", 86400, "b", settle_s=0)
        assert not ok and "not due" in why
        ok, _ = await try_acquire(store, "wf", 0, "b", settle_s=0)
        assert ok
        # The state never displaces the published set as the store's latest.
        assert (await store.get_latest_resources()).resources_id == "wf:v1"
    finally:
        await store.close()


def test_schedule_refuses_when_optimization_is_disabled(tmp_path, capsys, fake_llm):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"agentLightning": {"optimization": {"enabled": False}}}))
    rc = main(
        [
            "train",
            "schedule",
            "--workflow",
            str(write_workflow(tmp_path, fake_llm.base_url)),
            "--tasks",
            str(write_tasks(tmp_path)),
            "--once",
            "--config",
            str(cfg),
        ]
    )
    assert rc == 1 and "optimization.enabled is false" in capsys.readouterr().out


def _schedule(tmp_path, llm, *run_options: str) -> int:
    cfg = tmp_path / "c.yaml"
    opt = {"enabled": True, "training_interval": "daily"}
    cfg.write_text(
        yaml.safe_dump({"agentLightning": {"optimization": opt}, "llm": {"prices": PRICES}})
    )
    return main(
        [
            *("train", "schedule", "--once", "--store", "in_memory", "--config", str(cfg)),
            *("--workflow", str(write_workflow(tmp_path, llm.base_url))),
            *("--tasks", str(write_tasks(tmp_path, 30)), "--out", str(tmp_path / "runs")),
            *run_options,
        ]
    )


def test_schedule_passes_train_run_options_given_after_the_double_dash(tmp_path, arith_llm):
    cat = tmp_path / "catalog.yaml"
    cat.write_text(yaml.safe_dump([{"endpoint": arith_llm.base_url, "model": "mini"}]))
    rc = _schedule(
        tmp_path, arith_llm, "--", "--algorithm", "cost", "--catalog", str(cat), "--in-process"
    )
    assert rc == 0
    (report,) = (tmp_path / "runs").glob("*/report.json")
    rep = json.loads(report.read_text())
    # Only the catalog given after `--` offers `mini`: the schedule's run searched it and kept it.
    assert any(r["model"] == "mini" for r in arith_llm.requests)
    assert rep["status"] == "completed" and rep["published"] == "arith:v1"
    assert rep["resources"]["default@solve"]["model"] == "mini"


def test_schedule_refuses_its_own_options_and_unknown_ones_after_the_double_dash(
    tmp_path, arith_llm, capsys
):
    with pytest.raises(SystemExit) as e:
        _schedule(tmp_path, arith_llm, "--", "--out", str(tmp_path / "elsewhere"))
    assert "error: --out is an option of `train schedule`: give it before `--`" in str(e.value)
    with pytest.raises(SystemExit) as e:  # argparse would take `--ou` for `--out`
        _schedule(tmp_path, arith_llm, "--", "--ou=elsewhere")
    assert "error: --ou is an option of `train schedule`" in str(e.value)
    with pytest.raises(SystemExit) as e:
        _schedule(tmp_path, arith_llm, "--", "--catalogue", "x.yaml")
    assert e.value.code == 2 and "unrecognized arguments: --catalogue" in capsys.readouterr().err
    assert not arith_llm.requests and not (tmp_path / "runs").exists()  # nothing ran


def test_verl_names_what_is_missing(capsys, tmp_path, fake_llm):
    msg = verl_unavailable()
    assert msg is not None and "CUDA GPU" in msg and "agentlightning[verl]" in msg
    assert main(["train", "verl"]) == 2
    rc = main(
        [
            "train",
            "run",
            "--workflow",
            str(write_workflow(tmp_path, fake_llm.base_url)),
            "--tasks",
            str(write_tasks(tmp_path)),
            "--algorithm",
            "verl",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and "missing" in capsys.readouterr().err
