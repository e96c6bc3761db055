"""``agl.Trainer(n_runners=2).fit(LitWorkflow(wf))`` in Agent Lightning's own process.

What is asserted is what Agent Lightning's own adapters read back from its own store after
the rollouts (``TraceToMessages``, ``TracerTraceToTriplet``, ``find_final_reward``), with its
default ``AgentOpsTracer`` and with ``OtelTracer``. The resources agl published (a prompt
template, VERL's ``main_llm`` as a ``ProxyLLM``) overlay the workflow's own: the workflow's own
LLM points at a closed port and its own prompt says ``OWN PROMPT``, so neither may show up.
The fake server returns token ids the way vLLM does, so the triplets must carry them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.runner.agl_helpers import ROOT, run_agl_script

pytestmark = pytest.mark.interop


def _ids(text: str) -> list[int]:
    """Same as agl_scripts/fake_openai.token_ids."""
    return [sum(map(ord, w)) % 50000 + 1 for w in text.split()]


@pytest.fixture(scope="module", params=["agentops", "otel"])
def fit_report(request: pytest.FixtureRequest) -> dict:
    return run_agl_script("agl_fit.py", request.param)


def test_agl_rewards_and_status_reach_agl_store(fit_report: dict) -> None:
    rollouts = fit_report["rollouts"]
    assert [r["status"] for r in rollouts] == ["succeeded"] * 4 + ["failed"]
    # Evaluator: expected text in the answer (the fake echoes the prompt).
    assert [r["final_reward"] for r in rollouts[:4]] == [1.0, 0.0, 1.0, 1.0]
    for r in rollouts:
        assert "agentlightning.annotation" in r["span_names"]
        assert "invoke_workflow agl-echo" in r["span_names"]


def test_agl_messages_use_published_prompt(fit_report: dict) -> None:
    questions = ["say hi", "say bye", "name a colour", "wrapped form"]
    for r, q in zip(fit_report["rollouts"][:4], questions, strict=True):
        assert r["messages"] == [
            [
                {"role": "user", "content": f"Q: {q}"},
                {"role": "assistant", "content": f"echo: Q: {q}"},
            ]
        ], r
    # The failed rollout (input without the template's variable) called no LLM.
    assert fit_report["rollouts"][4]["messages"] == []


def test_agl_triplets_carry_token_ids_and_reward(fit_report: dict) -> None:
    questions = ["say hi", "say bye", "name a colour", "wrapped form"]
    rewards = [1.0, 0.0, 1.0, 1.0]
    for r, q, reward in zip(fit_report["rollouts"][:4], questions, rewards, strict=True):
        assert r["triplets"] == [
            {"prompt_ids": _ids(f"Q: {q}"), "response_ids": _ids(f"echo: Q: {q}"), "reward": reward}
        ]
        # Exactly one LLM-call span: the tracer's own openai instrumentation stayed silent.
        assert r["span_names"].count("openai.chat.completion") == 1


def test_agl_proxy_llm_keeps_per_rollout_route(fit_report: dict) -> None:
    expected = {
        f"/rollout/{r['rollout_id']}/attempt/{r['attempt_id']}/v1/chat/completions"
        for r in fit_report["rollouts"][:4]
    }
    assert set(fit_report["paths"]) == expected
    assert len(fit_report["paths"]) == 4


def test_agl_module_needs_agentlightning() -> None:
    """In lightspan's own venv (no agentlightning) the import fails with a clear message."""
    proc = subprocess.run(
        [sys.executable, "-c", "import lightspan.runner.agl"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode == 0:
        pytest.skip("agentlightning is installed in this venv")
    assert "lightspan.runner.agl needs Agent Lightning" in proc.stderr
    assert "agentlightning==0.3.0" in proc.stderr
