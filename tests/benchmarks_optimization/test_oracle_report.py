"""The search grid, the run cache, the oracle's choice and the report's statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.optimization.oracle import (
    ResultCache,
    RunRecord,
    oracle_choice,
    search_grid,
    spec_digest,
)
from benchmarks.optimization.report import bootstrap_ci, cut, percentile
from benchmarks.optimization.run import paired_runs
from benchmarks.optimization.tasks import Task, generate
from benchmarks.optimization.trainer_seam import resources_to_spec_section
from benchmarks.optimization.workflows import StepChoice, config_key, workflow_spec

from lightspan.engine import PriceTable, ResourceSet, workflow_from_dict
from lightspan.engine.loader import parse_resources

PRICES = PriceTable({"s": {"input": 1.0, "output": 1.0}, "b": {"input": 10.0, "output": 10.0}})


def test_grid_sizes() -> None:
    assert len(search_grid("sequence", ["s", "b"], [64, 256])) == 2**3 * 2
    assert len(search_grid("organizer_worker", ["s", "m", "b"], [64])) == 3
    vote = search_grid("vote", ["s", "b"], [64])
    assert len(vote) == 4  # multisets of 3 branches over 2 models
    assert len({config_key(c) for c in vote}) == 4


def _run(task: str, config: str, reward: float, model: str, tokens: int) -> RunRecord:
    call = {"step": "w", "model": model, "input_tokens": tokens, "output_tokens": 0, "latency_s": 1}
    return RunRecord(task, config, reward, "succeeded", 1.0, [call])


def test_oracle_takes_the_cheapest_run_at_the_best_reward() -> None:
    tasks = generate("arithmetic", "test", 2, seed=0)
    t1, t2 = tasks[0].id, tasks[1].id
    configs = [{"worker": StepChoice("s", 64)}, {"worker": StepChoice("b", 64)}]
    ks, kb = (config_key(c) for c in configs)
    results = {
        (ks, t1): _run(t1, ks, 1.0, "s", 100),  # cheap and right
        (kb, t1): _run(t1, kb, 1.0, "b", 100),
        (ks, t2): _run(t2, ks, 0.0, "s", 100),  # cheap but wrong: the oracle pays for b
        (kb, t2): _run(t2, kb, 1.0, "b", 100),
    }
    chosen = oracle_choice(results, configs, tasks, PRICES)
    assert chosen[t1].config == ks
    assert chosen[t2].config == kb
    assert chosen[t2].cost(PRICES) == 100 * 10 / 1e6


def test_cache_survives_a_reload_and_the_last_write_wins(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "runs.jsonl")
    cache.put("k", _run("t", "c", 0.0, "s", 1))
    cache.put("k", _run("t", "c", 1.0, "s", 1))
    again = ResultCache(tmp_path / "runs.jsonl")
    got = again.get("k")
    assert got is not None and got.reward == 1.0 and got.calls[0]["model"] == "s"
    assert again.get("other") is None


def test_spec_digest_ignores_endpoints_but_not_prompts() -> None:
    cfg = {"worker": StepChoice("s", 64)}
    a = workflow_spec("arithmetic", "organizer_worker", cfg, {"s": "http://127.0.0.1:1/v1"})
    b = workflow_spec("arithmetic", "organizer_worker", cfg, {"s": "http://127.0.0.1:2/v1"})
    assert spec_digest(a) == spec_digest(b)
    b["resources"]["prompts"]["item"] += " Be brief."
    assert spec_digest(a) != spec_digest(b)


def test_trainer_resources_map_becomes_a_workflow_section() -> None:
    cfg = {"worker": StepChoice("s", 64)}
    spec = workflow_spec("classification", "organizer_worker", cfg, {"s": "http://h/v1"})
    wf = workflow_from_dict(spec)
    rs = ResourceSet("x", dict(wf.resources._latest.resources))  # type: ignore[attr-defined]
    spec["resources"] = resources_to_spec_section(rs.to_dict(), "rs-opt")
    again = workflow_from_dict(spec)
    assert again.name == wf.name


def test_statistics() -> None:
    lo, hi = bootstrap_ci([0.0, 1.0] * 10, seed=1)
    assert 0.2 < lo < 0.5 < hi < 0.8
    assert bootstrap_ci([1.0, 1.0], seed=1) == (1.0, 1.0)
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5.0], 95) == 5.0
    assert abs(cut(10.0, 7.0) - 30.0) < 1e-9


def test_per_step_entries_of_a_trainer_winner_replace_the_plain_ones() -> None:
    llm = {"resource_type": "llm", "endpoint": "http://h/v1", "model": "b"}
    winner = {
        "worker_llm@worker": {**llm, "model": "s", "sampling_parameters": {"max_tokens": 8}},
        "worker_llm": {**llm, "sampling_parameters": {"max_tokens": 512}},
        "item": {"resource_type": "prompt_template", "template": "{sentence}"},
    }
    section = resources_to_spec_section(winner, "rs")
    assert section["llms"] == {
        "worker_llm": {
            "endpoint": "http://h/v1",
            "model": "s",
            "sampling_parameters": {"max_tokens": 8},
        }
    }
    assert section["prompts"]["item"]["template"] == "{sentence}"


def test_a_routed_winners_long_input_variants_stay_variants() -> None:
    llm = {"resource_type": "llm", "endpoint": "http://h/v1", "model": "b"}
    winner = {
        "worker_llm": {**llm, "sampling_parameters": {"max_tokens": 512}},
        "worker_llm@worker": {**llm, "model": "s"},
        "worker_llm@worker|input>144": {**llm, "sampling_parameters": {"max_tokens": 512}},
    }
    section = resources_to_spec_section(winner, "rs")
    assert sorted(section["llms"]) == ["worker_llm", "worker_llm|input>144"]
    assert section["llms"]["worker_llm"]["model"] == "s"
    rs = parse_resources(section)
    assert rs.for_input("x" * 144).llm("worker_llm").model == "s"
    assert rs.for_input("x" * 145).llm("worker_llm").model == "b"


async def test_paired_runs_alternate_the_arms_order_and_are_never_reused(tmp_path, monkeypatch):
    from benchmarks.optimization import oracle

    order: list[tuple[str, str]] = []

    class _Wf:
        async def aclose(self) -> None:
            pass

    async def fake_run(wf, spec, task):  # type: ignore[no-untyped-def]
        order.append((spec["resources"]["id"], task.id))
        return RunRecord(task.id, "x", 1.0, "succeeded", 0.1)

    monkeypatch.setattr(oracle, "load_spec", lambda spec: _Wf())
    monkeypatch.setattr(oracle, "run_spec", fake_run)
    specs = {arm: {"workflow": "w", "resources": {"id": arm, "llms": {}}} for arm in ("b", "o")}
    tasks = [Task(f"t{i}", "extraction", 1, {}, {}) for i in range(3)]
    cache = ResultCache(tmp_path / "runs.jsonl")
    out = await oracle.evaluate_paired(specs, tasks, cache, stamp="s1")
    assert order == [("b", "t0"), ("o", "t0"), ("o", "t1"), ("b", "t1"), ("b", "t2"), ("o", "t2")]
    assert {k: r.config for k, r in out.items()} == {(a, t.id): a for a in "bo" for t in tasks}
    # A second benchmark run measures afresh (its stamp differs): nothing comes from the cache.
    await oracle.evaluate_paired(specs, tasks, cache, stamp="s2")
    assert len(order) == 12


def test_model_servers_are_repeatable_by_default_only_with_one_slot() -> None:
    """One slot: no prompt cache (answers independent of the request before); several slots or
    ``--quick`` (8 slots): the cache, since batching makes answers vary anyway; explicit flags
    win."""
    from benchmarks.optimization.run import parse_args

    cases = {
        (): (1, True),
        ("--quick",): (8, False),
        ("--slots", "4"): (4, False),
        ("--slots", "1", "--no-repeatable"): (1, False),
        ("--quick", "--slots", "1"): (1, True),
        ("--slots", "4", "--repeatable"): (4, True),
    }
    for argv, expected in cases.items():
        _, s = parse_args(list(argv))
        assert (s.slots, s.repeatable) == expected, argv


def test_paired_changes_count_lower_and_higher_tasks_and_runs_pair_by_task() -> None:
    from lightspan.trainer.evaluation.stats import paired_changes

    assert paired_changes([0.0, 1.0, 0.0, 1.0], [1.0, 0.5, 0.0, 1.0]) == (1, 1)
    assert paired_changes([1.0, 0.5], [1.0, 0.5]) == (0, 0)
    with pytest.raises(ValueError, match="differ in size: 1 vs 2"):
        paired_changes([1.0], [1.0, 0.0])

    def run(task: str, reward: float) -> RunRecord:
        return RunRecord(task, "c", reward, "succeeded", 1.0)

    base, opt = [run("a", 1.0), run("b", 0.5)], [run("a", 0.0), run("b", 1.0)]
    assert [(b.task_id, o.reward) for b, o in paired_runs(base, opt)] == [("a", 0.0), ("b", 1.0)]
    with pytest.raises(ValueError, match="unpaired runs: baseline a against optimized b"):
        paired_runs(base, [opt[1], opt[0]])


def test_a_kept_baseline_on_the_lazy_vote_is_reported_as_the_majority_arm() -> None:
    from benchmarks.optimization.report import ArmFigures, Cell
    from benchmarks.optimization.run import MAJORITY_ARM, trainer_lines

    prices = PriceTable({"b": {"input": 1.0, "output": 1.0}})
    runs = [_run(f"t{i}", "c", 1.0, "b", 100) for i in range(3)]
    arms = {a: ArmFigures.of(a, runs, prices, prices, 0) for a in ("baseline", "optimized")}
    report = {"status": "completed", "held_on_test": False, "trainer_spend": {"total_cost": 1}}
    plain = trainer_lines([Cell("extraction", "vote", dict(arms))], {"extraction-vote": report})
    assert "are the baseline's, re-run" in plain[0]
    arms[MAJORITY_ARM] = ArmFigures.of(MAJORITY_ARM, runs, prices, prices, 0)
    lazy = trainer_lines([Cell("extraction", "vote", arms)], {"extraction-vote": report})
    assert "the baseline's resources on the lazy vote" in lazy[0]
    assert "re-run" not in lazy[0]
