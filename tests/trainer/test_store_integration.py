"""The trainer through the store: candidates as val rollouts executed by in-process runners,
figures read back from the stored spans, profile and export from the same spans, publishing
under ``<workflow>:v<n>`` (fake arithmetic LLM)."""

from __future__ import annotations

import json

from lightspan.store.backends.factory import open_store
from lightspan.trainer.data import load_tasks
from lightspan.trainer.evaluation.evaluate import InProcessEvaluator
from lightspan.trainer.evaluation.store_eval import StoreEvaluator
from lightspan.trainer.publishing.publish import history, publish, rollback
from lightspan.trainer.traces.export import export
from lightspan.trainer.traces.profile import profile_runs, render_profile
from lightspan.trainer.traces.spans import collect_runs

from .conftest import PRICES, write_tasks, write_workflow


async def test_store_rollouts_match_in_process_runs_and_feed_profile_and_export(
    arith_llm, tmp_path
):
    path = write_workflow(tmp_path, arith_llm.base_url, max_tokens=10)
    tasks = load_tasks(write_tasks(tmp_path, 8))
    store = await open_store("memory")
    ev = StoreEvaluator(path, store, prices=PRICES, runners=2, poll_interval=0.05)
    await ev.start()
    try:
        base = (await ev.workflow.resources.get_resources()).to_dict()
        ticks = []
        via_store = await ev.evaluate(base, tasks, progress=ticks.append)
        assert sum(ticks) == len(tasks)
        local = await InProcessEvaluator(path, prices=PRICES).evaluate(base, tasks)
        for s, loc in zip(via_store, local, strict=True):
            assert (s.task_id, s.reward, s.status) == (loc.task_id, loc.reward, loc.status)
            assert (s.input_tokens, s.output_tokens) == (loc.input_tokens, loc.output_tokens)
            assert s.cost == loc.cost > 0 and s.latency_s > 0
            assert s.calls[0].step == "solve" and s.calls[0].finish_reason == "length"
            assert s.calls[0].messages and s.calls[0].completion  # runner captures content
        # The candidate id is outside the workflow's namespace: never its latest set.
        rids = {r.resources_id for r in (await store.query_resources()).items}
        assert all(not r.startswith("arith:") for r in rids)

        runs = await collect_runs(store, "arith")
        prof = profile_runs(runs)
        (step,) = prof["steps"]
        assert step["step"] == "solve" and step["model"] == "big" and step["calls"] == 8
        assert step["length_rate"] == 1.0 and step["output_tokens"]["p50"] == 10
        assert step["cost_share"] == 1.0 and prof["rewards"][0]["runs"] == 8
        from rich.console import Console

        console = Console(record=True, width=160)
        console.print(render_profile(prof, "arith"))
        text = console.export_text()
        assert "arith: 8 runs" in text and "solve" in text and "100.0" in text

        out = tmp_path / "sft.jsonl"
        assert await export(store, "arith", "sft-jsonl", out) == 8
        row = json.loads(out.read_text().splitlines()[0])
        assert row["messages"][-1]["role"] == "assistant" and "reward" in row
        trip = tmp_path / "trip.jsonl"
        assert await export(store, "arith", "agl-triplets", trip) == 8
        t = json.loads(trip.read_text().splitlines()[0])["triplets"][-1]
        assert t["reward"] is not None and t["prompt"]["messages"]
    finally:
        await ev.aclose()
        await store.close()


async def test_publish_history_rollback(tmp_path):
    store = await open_store("memory")
    try:
        a = {"p": {"resource_type": "prompt_template", "template": "A {x}", "engine": "f-string"}}
        b = {"p": {"resource_type": "prompt_template", "template": "B {x}", "engine": "f-string"}}
        assert await publish(store, "wf", a) == "wf:v1"
        assert await publish(store, "wf", b) == "wf:v2"
        assert await rollback(store, "wf") == "wf:v3"
        v3 = await store.get_resources_by_id("wf:v3")
        assert v3.resources["p"].template == "A {x}"
        assert [h["resources_id"] for h in await history(store, "wf")] == [
            "wf:v1",
            "wf:v2",
            "wf:v3",
        ]
        assert await history(store, "other") == []
    finally:
        await store.close()


async def test_labeled_production_runs_become_tasks(arith_llm, tmp_path):
    from lightspan.engine import load_workflow
    from lightspan.runner.spans import SpanSink, runner_tracing
    from lightspan.trainer.traces.spans import tasks_from_store

    store = await open_store("memory")
    wf = load_workflow(write_workflow(tmp_path, arith_llm.base_url))
    _provider, buffer, listener = runner_tracing(capture_content=True)
    try:
        for q, exp in (("1 + 2", "3"), ("2 + 2", None), ("1 + 2", "3"), ("5 + 5", "10")):
            r = await wf.run({"question": q}, expected=exp, listeners=(listener,))
            spans = buffer.take(r.rollout_id, r.attempt_id)
            await SpanSink(store).send(spans, r.rollout_id, r.attempt_id)
        tasks = await tasks_from_store(store, "arith")
        # The unlabeled run is left out, the repeated input is kept once.
        assert [(t.input, t.expected) for t in tasks] == [
            ({"question": "1 + 2"}, "3"),
            ({"question": "5 + 5"}, "10"),
        ]
        assert await tasks_from_store(store, "other") == []
    finally:
        await wf.aclose()
        await store.close()
