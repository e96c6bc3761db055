"""The demo's tracing hook: the real demo workflow, traced into the in-process store, and the
report of what the store holds."""

from __future__ import annotations

from rich.console import Console

from lightspan.demo import build_workflow
from lightspan.demo_tracing import start_in_process_tracing


async def test_demo_tracing_reports_rollout_spans_llm_calls_and_reward(fake_llm):
    tracing = start_in_process_tracing()
    try:
        wf = build_workflow(fake_llm.base_url, "small-model")
        result = await wf.run({"questions": ["What is 7 + 5?"]}, expected=[12.0])
        await wf.aclose()
        spans = tracing.spans_of(result.rollout_id)
        names = [s.name for s in spans]
        assert names.count("openai.chat.completion") == 2
        assert "agentlightning.annotation" in names
        console = Console(record=True, width=200)
        tracing.report(console, result)
        text = console.export_text()
    finally:
        tracing.shutdown()
    assert result.rollout_id in text and "succeeded" in text
    for title in ("Spans by name and kind", "LLM-call spans", "Reward span"):
        assert title in text
    total_in = sum(c.input_tokens for c in result.llm_calls)
    assert "total" in text and str(total_in) in text
