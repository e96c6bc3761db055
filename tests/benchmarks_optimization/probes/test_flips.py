"""benchmarks/optimization/probes/flips.py sends the requests the benchmark's workflow file sends.

Why: flips.py calls the model servers directly (it needs the answer's token probability and
one chain per variant), and its counts stand for what the trainer's winner does in the
workflow; that holds only if each step gets the same messages and sampling."""

from __future__ import annotations

import json

import httpx
from benchmarks.optimization.probes.flips import BASELINE, VARIANTS, Chain, ChainCache, run_chain
from benchmarks.optimization.tasks import generate
from benchmarks.optimization.workflows import StepChoice, workflow_spec

from lightspan.engine import PriceTable, workflow_from_dict


def _sent(requests: list[dict]) -> list[tuple[str, str, int, float]]:
    return [
        (r["model"], r["messages"][-1]["content"], r["max_tokens"], r["temperature"])
        for r in requests
    ]


async def test_each_chain_sends_what_the_workflow_sends(fake_llm) -> None:
    task = generate("classification", "train", 1, seed=99)[0]
    for cfg in (BASELINE, VARIANTS["winner (all three changes)"]):
        config = {step: StepChoice(m, mt) for step, (m, mt, _) in cfg.items()}
        endpoints = {m: fake_llm.base_url for m, _, _ in cfg.values()}
        spec = workflow_spec("classification", "sequence", config, endpoints)
        for step, (_, _, suffix) in cfg.items():  # the trainer's concise variant: a suffix
            spec["resources"]["prompts"][step] += suffix
        wf = workflow_from_dict(spec, source="<test>")
        fake_llm.requests.clear()
        assert (await wf.run(task.input)).ok
        by_workflow = _sent(fake_llm.requests)
        fake_llm.requests.clear()
        async with httpx.AsyncClient() as client:
            chain = await run_chain(client, endpoints, cfg, task)
        assert _sent(fake_llm.requests) == by_workflow
        assert len(by_workflow) == 3
        # Tokens per model, as the server reported them (the fake reports usage per call).
        assert sum(c for _, c in chain.tokens.values()) > 0
        assert set(chain.tokens) == {m for m, _, _ in cfg.values()}


def test_the_chain_cache_survives_a_reload(tmp_path) -> None:
    task = generate("classification", "train", 1, seed=99)[0]
    cache = ChainCache(tmp_path / "flips.jsonl")
    key = cache.key(BASELINE, task)
    chain = Chain(1.0, 0.5, {"qwen2.5-coder-1.5b": [120, 40]}, 3.5)
    cache.put(key, chain)
    assert ChainCache(tmp_path / "flips.jsonl").rows == {key: chain}
    prices = PriceTable({"qwen2.5-coder-1.5b": {"input": 1.0, "output": 2.0}})
    assert chain.cost(prices) == (120 * 1.0 + 40 * 2.0) / 1e6
    assert cache.key(VARIANTS["format on 0.5B alone"], task) != key


def test_a_cached_chain_without_tokens_is_run_again(tmp_path) -> None:
    """A row from before chains recorded tokens would price its chain at 0."""
    task = generate("classification", "train", 1, seed=99)[0]
    path = tmp_path / "flips.jsonl"
    key = ChainCache.key(BASELINE, task)
    path.write_text(json.dumps({"key": key, "reward": 1.0, "p_first": 0.5}) + "\n")
    assert ChainCache(path).rows == {}
