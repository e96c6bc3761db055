"""``lightspan train run`` / ``lightspan eval`` end to end (fake LLM, in-process runs), and the
partial reports of Ctrl-C and a budget too small."""

from __future__ import annotations

import asyncio
import json

import yaml

from lightspan.cli import main
from lightspan.trainer.data import load_tasks
from lightspan.trainer.evaluation.evaluate import InProcessEvaluator
from lightspan.trainer.run import TrainOptions, train
from lightspan.trainer.search.cost import ModelOption

from .conftest import PRICES, write_tasks, write_workflow

REPORT_FIELDS = {
    "reward_mean",
    "reward_ci95",
    "cost_per_run",
    "latency_p50_s",
    "latency_p95_s",
    "tokens_per_run",
}


def _config(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({"llm": {"prices": PRICES}}))
    return p


def test_train_run_cli_writes_report_and_publishes_a_winner(arith_llm, tmp_path):
    wf = write_workflow(tmp_path, arith_llm.base_url)
    tasks = write_tasks(tmp_path, 30)
    cat = tmp_path / "catalog.yaml"
    cat.write_text(yaml.safe_dump([{"endpoint": arith_llm.base_url, "model": "small"}]))
    out = tmp_path / "out"
    rc = main(
        [
            "train",
            "run",
            "--workflow",
            str(wf),
            "--tasks",
            str(tasks),
            "--algorithm",
            "cost",
            "--store",
            "in_memory",
            "--in-process",
            "--runners",
            "2",
            "--out",
            str(out),
            "--publish",
            "--catalog",
            str(cat),
            "--config",
            str(_config(tmp_path)),
        ]
    )
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "completed" and rep["held_on_test"] is True
    assert REPORT_FIELDS <= set(rep["baseline"]) and REPORT_FIELDS <= set(rep["optimized"])
    assert rep["optimized"]["reward_mean"] == rep["baseline"]["reward_mean"] == 1.0
    assert rep["optimized"]["cost_per_run"] < 0.5 * rep["baseline"]["cost_per_run"]
    assert rep["published"] == "arith:v1"
    assert rep["resources"]["default@solve"]["model"] == "big"
    assert {"default", "solve"} <= set(rep["resources"]), "a complete set, not a diff"
    assert rep["steps"][0]["step"] == "solve" and rep["steps"][0]["after"]["cost_share"] == 1
    assert rep["trainer_spend"]["rollouts"] > 30
    assert set(rep["plots"]) == {"candidates.png", "best_per_round.png", "step_share.png"}
    assert all((out / p).stat().st_size > 1000 for p in rep["plots"])
    assert "| cost_per_run |" in (out / "report.md").read_text()

    # lightspan eval of the winner reproduces the figures on all tasks.
    res = tmp_path / "res.json"
    res.write_text(json.dumps(rep["resources"]))
    rc = main(
        [
            "eval",
            "--workflow",
            str(wf),
            "--tasks",
            str(tasks),
            "--resources",
            str(res),
            "--out",
            str(tmp_path / "e.json"),
            "--config",
            str(_config(tmp_path)),
        ]
    )
    ev = json.loads((tmp_path / "e.json").read_text())
    assert rc == 0 and ev["reward_mean"] == 1.0 and REPORT_FIELDS <= set(ev)


def test_empty_task_file_is_a_clear_error(arith_llm, tmp_path, capsys):
    wf = write_workflow(tmp_path, arith_llm.base_url)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc = main(
        [
            "train",
            "run",
            "--workflow",
            str(wf),
            "--tasks",
            str(empty),
            "--algorithm",
            "cost",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and "is empty" in capsys.readouterr().err


def test_unreachable_store_is_a_clear_error(arith_llm, tmp_path, unused_port):
    wf = write_workflow(tmp_path, arith_llm.base_url)
    try:
        main(
            [
                "train",
                "history",
                "--store",
                f"http://127.0.0.1:{unused_port}",
                "--workflow",
                "arith",
            ]
        )
    except SystemExit as e:
        assert "unreachable" in str(e)
    else:
        raise AssertionError("no error for an unreachable store")
    assert wf.exists()


class _Interrupting(InProcessEvaluator):
    calls = 0

    async def _run(self, resources, tasks, progress):
        type(self).calls += 1
        if type(self).calls == 3:
            raise asyncio.CancelledError
        return await super()._run(resources, tasks, progress)


async def _train(ev, tmp_path, base_url, **opts):
    wf = ev.load()
    published = []

    async def publish(res):
        published.append(res)
        return "x"

    rep = await train(
        evaluator=ev,
        workflow=wf,
        baseline=(await wf.resources.get_resources()).to_dict(),
        tasks=load_tasks(write_tasks(tmp_path, 30)),
        catalog=[ModelOption(base_url, "small")],
        price=lambda m: None,
        options=TrainOptions(**opts),
        out=tmp_path / "out",
        publish=publish,
    )
    return rep, published


async def test_the_rollouts_progress_counts_the_searchs_runs_as_they_finish(arith_llm, tmp_path):
    """Once only the train split's baseline runs were counted: the bar stood still through the
    search (an hour and more on real models)."""
    ev = InProcessEvaluator(write_workflow(tmp_path, arith_llm.base_url), prices=PRICES)
    wf = ev.load()
    ticked = {"run": 0, "candidate": 0}
    seen: list[tuple[int, int]] = []

    def on_progress(kind: str, n: int) -> None:
        ticked[kind] += n
        if kind == "candidate":
            seen.append((ticked["run"], ev.spend.rollouts))

    rep = await train(
        evaluator=ev,
        workflow=wf,
        baseline=(await wf.resources.get_resources()).to_dict(),
        tasks=load_tasks(write_tasks(tmp_path, 30)),
        catalog=[ModelOption(arith_llm.base_url, "small")],
        price=lambda m: None,
        options=TrainOptions(),
        out=tmp_path / "out",
        on_progress=on_progress,
    )
    assert rep["status"] == "completed" and len(seen) > 3
    assert all(runs >= made for runs, made in seen)
    assert seen[-1][0] > rep["split"]["train"] + rep["split"]["val"]


async def test_interrupt_writes_a_partial_report_and_publishes_nothing(arith_llm, tmp_path):
    ev = _Interrupting(write_workflow(tmp_path, arith_llm.base_url), prices=PRICES)
    rep, published = await _train(ev, tmp_path, arith_llm.base_url)
    assert rep["status"] == "interrupted" and not published and rep["published"] is None
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["status"] == "interrupted" and on_disk["candidates"]


async def test_budget_too_small_decides_nothing(arith_llm, tmp_path):
    ev = InProcessEvaluator(write_workflow(tmp_path, arith_llm.base_url), prices=PRICES)
    rep, published = await _train(ev, tmp_path, arith_llm.base_url, max_rollouts=20)
    assert rep["status"] == "budget_exhausted" and not published
    assert any("budget" in n for n in rep["notes"])


def test_both_runs_apo_then_cost_and_counts_optimizer_spend(arith_llm, tmp_path):
    # The fake answers the critic and editor with arithmetic chatter: every edit drops the
    # placeholder and is rejected before any rollout; the cost search still finds its saving.
    wf = write_workflow(tmp_path, arith_llm.base_url)
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
            "both",
            "--in-process",
            "--out",
            str(out),
            "--config",
            str(_config(tmp_path)),
            "--optimizer-endpoint",
            arith_llm.base_url,
            "--optimizer-model",
            "big",
            "--beam-rounds",
            "1",
            "--branch-factor",
            "2",
            "--beam-width",
            "1",
        ]
    )
    rep = json.loads((out / "report.json").read_text())
    assert rc == 0 and rep["status"] == "completed"
    assert rep["trainer_spend"]["optimizer_calls"] == 1 + 2 * 2  # check + 2 x (critic, editor)
    spend = rep["trainer_spend"]
    assert spend["optimizer_cost"] > 0  # "big" is priced in the configuration
    assert spend["total_cost"] == spend["rollout_cost"] + spend["optimizer_cost"]
    assert sum("rejected edit of solve" in n for n in rep["notes"]) == 2
    assert rep["held_on_test"] and "briefly" in rep["resources"]["solve@solve"]["template"]
    assert [r["round"] for r in rep["best_per_round"]] == [0, 1, 2, 3]


def test_ctrl_c_on_the_command_stops_cleanly(arith_llm, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    wf = write_workflow(tmp_path, arith_llm.base_url)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lightspan",
            "train",
            "run",
            "--workflow",
            str(wf),
            "--tasks",
            str(write_tasks(tmp_path, 400)),
            "--algorithm",
            "cost",
            "--store",
            "in_memory",
            "--runners",
            "1",
            "--out",
            str(out),
            "--publish",
            "--config",
            str(_config(tmp_path)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while len(arith_llm.requests) < 20 and time.time() < deadline:  # rollouts are running
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "interrupted" and rep["published"] is None
    assert "nothing was published" in err


def test_every_run_failing_reports_the_error_and_publishes_nothing(arith_llm, tmp_path):
    arith_llm.down = True
    wf = write_workflow(tmp_path, arith_llm.base_url)
    out = tmp_path / "out"
    rc = main(
        [
            "train",
            "run",
            "--workflow",
            str(wf),
            "--tasks",
            str(write_tasks(tmp_path, 9)),
            "--algorithm",
            "cost",
            "--in-process",
            "--out",
            str(out),
            "--publish",
            "--store",
            "in_memory",
        ]
    )
    rep = json.loads((out / "report.json").read_text())
    assert rc == 1 and rep["status"] == "failed" and rep["published"] is None
    assert "every baseline run failed on the train split" in rep["error"]
    assert "503" in rep["error"]  # the first run's own error is shown


def test_on_test_equal_cost_needs_a_task_by_task_speedup():
    from lightspan.trainer.evaluation.evaluate import Result
    from lightspan.trainer.run import _decide

    def runs(lat):
        return [Result(f"t{i}", 1.0, "succeeded", cost=5.0, latency_s=x) for i, x in enumerate(lat)]

    base = runs([2.0, 2.0, 2.0, 1.0] * 3)
    noisy = runs([1.0, 1.0, 1.0, 9.0] * 3)  # p50 1.0 vs 2.0, slower on a quarter: not faster
    held, why, _ = _decide(base, noisy, TrainOptions())
    assert not held and "neither cheaper nor faster" in why
    quick = runs([1.5, 1.5, 1.5, 0.5] * 3)  # faster on every task
    held, why, _ = _decide(base, quick, TrainOptions())
    assert held and "faster" in why


def test_a_refusal_on_test_counts_the_tasks_the_winner_lost_and_gained():
    from lightspan.trainer.evaluation.evaluate import Result
    from lightspan.trainer.run import _decide

    def runs(rewards, cost):
        return [
            Result(f"t{i}", r, "succeeded", cost=cost, latency_s=1.0) for i, r in enumerate(rewards)
        ]

    base = runs([1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1], 10.0)
    opt = runs([1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1], 3.0)
    held, why, lb = _decide(base, opt, TrainOptions())
    assert not held and lb < -0.02
    assert "the winner scored lower on 2 and higher on 1 of 11 test tasks" in why


async def test_test_split_runs_of_baseline_and_winner_share_one_time_window():
    # The machine gets quieter halfway (run latencies 10 s, then 1 s). Measured one after the
    # other, the winner (the same answers) looked faster on every task; scored together, the
    # two sets see the same load and the winner is not "faster".
    import itertools

    from lightspan.trainer.data import Task
    from lightspan.trainer.evaluation.evaluate import Evaluator, Result
    from lightspan.trainer.run import _decide, measure_test

    class _Drifting(Evaluator):
        def __init__(self) -> None:
            super().__init__("drift")
            self.clock = itertools.count()

        async def _run(self, resources, tasks, progress):  # type: ignore[no-untyped-def]
            out = []
            for t in tasks:
                await asyncio.sleep(0)
                lat = 10.0 if next(self.clock) < len(tasks) else 1.0
                out.append(Result(t.id, 1.0, "succeeded", cost=5.0, latency_s=lat))
            return out

    tasks = [Task(f"t{i}", {}, 1) for i in range(12)]
    base, opt = await measure_test(_Drifting(), [{"a": {"v": 1}}, {"a": {"v": 2}}], tasks)
    held, why, _ = _decide(base, opt, TrainOptions())
    assert not held and "neither cheaper nor faster" in why


def test_progress_is_printed_as_lines_when_stderr_is_not_a_terminal(capsys):
    """A trainer writing to a log file (the optimization benchmark's subprocess) shows its
    progress as lines; on a terminal the bars alone do."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from lightspan.trainer.cli import _ProgressLines

    for terminal, expected in ((False, 2), (True, 0)):
        bar = Progress(console=Console(file=io.StringIO(), force_terminal=terminal))
        runs = bar.add_task("rollouts", total=None)
        bar.add_task("candidates", total=None)
        lines = _ProgressLines(bar, every=0.0)
        for _ in range(2):
            bar.advance(runs, 5)
            lines.maybe_print()
        err = capsys.readouterr().err.splitlines()
        assert len(err) == expected, err
        if expected:
            assert err[-1].endswith("rollouts 10, candidates 0")
