"""``lightspan train export``: stored rollouts as fine-tuning data.

Formats: ``sft-jsonl`` (one row per LLM call: chat messages + the answer, the run's reward)
and ``agl-triplets`` (one row per rollout: Agent Lightning's prompt/response/reward triplets,
the reward on the last call as agl's TracerTraceToTriplet assigns it, token ids when the
spans recorded them). Calls without recorded content (capture_content off) are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightspan.trainer.traces.spans import LLM_SPAN, run_from_spans


async def export(
    store: Any, workflow: str, fmt: str, out: Path, *, since: float | None = None
) -> int:
    if fmt not in ("sft-jsonl", "agl-triplets"):
        raise ValueError(f"unknown export format {fmt!r}; use sft-jsonl or agl-triplets")
    page = await store.query_rollouts(sort_by="start_time", sort_order="asc")
    rows = 0
    with out.open("w") as f:
        for r in page.items:
            if since is not None and r.start_time < since:
                continue
            spans = (await store.query_spans(r.rollout_id, "latest")).items
            run = run_from_spans(spans)
            if run is None or run.workflow != workflow:
                continue
            llm_spans = [s for s in spans if s.name == LLM_SPAN]
            triplets = []
            for c, s in zip(run.result.calls, llm_spans, strict=False):
                if not c.messages or c.completion is None:
                    continue
                msgs = [*c.messages, {"role": "assistant", "content": c.completion}]
                if fmt == "sft-jsonl":
                    f.write(
                        json.dumps(
                            {
                                "messages": msgs,
                                "reward": run.result.reward,
                                "rollout_id": run.rollout_id,
                                "step": c.step,
                                "model": c.model,
                            }
                        )
                        + "\n"
                    )
                    rows += 1
                else:
                    a = s.attributes
                    triplets.append(
                        {
                            "prompt": {
                                "messages": c.messages,
                                "token_ids": a.get("prompt_token_ids") or [],
                            },
                            "response": {
                                "content": c.completion,
                                "token_ids": a.get("response_token_ids") or [],
                            },
                            "reward": None,
                            "metadata": {
                                "step": c.step,
                                "model": c.model,
                                "response_id": a.get("gen_ai.response.id"),
                            },
                        }
                    )
            if fmt == "agl-triplets" and triplets:
                if run.has_reward:
                    triplets[-1]["reward"] = run.result.reward
                f.write(
                    json.dumps(
                        {
                            "rollout_id": run.rollout_id,
                            "resources_id": run.resources_id,
                            "triplets": triplets,
                        }
                    )
                    + "\n"
                )
                rows += 1
    return rows
