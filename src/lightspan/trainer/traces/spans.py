"""Stored spans of one rollout -> the trainer's view of a run (reward, calls, cost, latency).

Why parse spans rather than trust runner-side summaries: "train on collected traces" means
production runs, which only exist as spans. The attribute names are the ones the engine's
instrumentation writes (lightspan.instrumentation.listener) and Agent Lightning's adapters read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightspan.semconv import REWARD_VALUE
from lightspan.trainer.evaluation.evaluate import CallRecord, Result

LLM_SPAN = "openai.chat.completion"


@dataclass(slots=True)
class RunTrace:
    """One workflow run found in the store."""

    rollout_id: str
    workflow: str | None
    resources_id: str | None
    mode: str | None
    start_time: float
    result: Result
    has_reward: bool


def _messages(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    i = 0
    while f"gen_ai.prompt.{i}.role" in attrs:
        out.append(
            {
                "role": attrs[f"gen_ai.prompt.{i}.role"],
                "content": attrs.get(f"gen_ai.prompt.{i}.content", ""),
            }
        )
        i += 1
    return out


def _status(span: Any) -> str:
    st = getattr(span, "status", None)
    return getattr(st, "status_code", "UNSET") if st is not None else "UNSET"


def run_from_spans(spans: Iterable[Any], task_id: str | None = None) -> RunTrace | None:
    """The run in one rollout's spans (its latest attempt), or ``None`` without a root span."""
    spans = list(spans)
    by_id = {s.span_id: s for s in spans}
    root = next(
        (s for s in spans if s.attributes.get("gen_ai.operation.name") == "invoke_workflow"),
        None,
    )
    if root is None:
        return None
    ra = root.attributes
    reward: float | None = None
    for s in spans:  # the last reward span in list order wins, as agl's find_final_reward
        v = s.attributes.get(REWARD_VALUE)
        if v is not None:
            reward = float(v)
    if reward is None and ra.get("lightspan.reward") is not None:
        reward = float(ra["lightspan.reward"])
    calls: list[CallRecord] = []
    for s in spans:
        if s.name != LLM_SPAN:
            continue
        a = s.attributes
        step = str(a.get("lightspan.step.name", "?"))
        p = by_id.get(s.parent_id) if s.parent_id and step == "?" else None
        while p is not None:
            if "lightspan.step.name" in p.attributes:
                step = str(p.attributes["lightspan.step.name"])
                break
            p = by_id.get(p.parent_id) if p.parent_id else None
        fr = a.get("gen_ai.response.finish_reasons") or []
        calls.append(
            CallRecord(
                step=step,
                model=str(a.get("gen_ai.request.model", "?")),
                input_tokens=int(a.get("gen_ai.usage.input_tokens") or 0),
                output_tokens=int(a.get("gen_ai.usage.output_tokens") or 0),
                cost=float(a.get("lightspan.llm.cost") or 0.0),
                latency_s=max(0.0, (s.end_time or 0.0) - (s.start_time or 0.0)),
                finish_reason=str(fr[0]) if fr else None,
                ok=_status(s) != "ERROR",
                max_tokens=a.get("gen_ai.request.max_tokens"),
                messages=_messages(a),
                completion=a.get("gen_ai.completion.0.content"),
            )
        )
    status = ra.get("lightspan.run.status")
    if status is None:
        status = "failed" if _status(root) == "ERROR" else "succeeded"
    status = {"ok": "succeeded", "error": "failed"}.get(str(status), str(status))
    result = Result(
        task_id=task_id or root.rollout_id,
        reward=reward or 0.0,
        status=status,
        cost=sum(c.cost for c in calls),
        latency_s=max(0.0, (root.end_time or 0.0) - (root.start_time or 0.0)),
        input_tokens=sum(c.input_tokens for c in calls),
        output_tokens=sum(c.output_tokens for c in calls),
        calls=calls,
        error=getattr(root.status, "description", None) if status == "failed" else None,
    )
    return RunTrace(
        rollout_id=root.rollout_id,
        workflow=ra.get("gen_ai.workflow.name"),
        resources_id=ra.get("lightspan.resources_id"),
        mode=ra.get("lightspan.rollout.mode"),
        start_time=root.start_time or 0.0,
        result=result,
        has_reward=reward is not None,
    )


async def collect_runs(
    store: Any, workflow: str, *, since: float | None = None, limit: int = -1
) -> list[RunTrace]:
    """Every stored run of ``workflow`` (latest attempt of each rollout) started after ``since``."""
    page = await store.query_rollouts(sort_by="start_time", sort_order="desc", limit=limit)
    runs: list[RunTrace] = []
    for r in page.items:
        if since is not None and r.start_time < since:
            continue
        spans = (await store.query_spans(r.rollout_id, "latest")).items
        run = run_from_spans(spans)
        if run is not None and run.workflow == workflow:
            runs.append(run)
    return runs


async def tasks_from_store(store: Any, workflow: str, *, since: float | None = None) -> list[Any]:
    """Labeled production runs as tasks: roots carrying ``lightspan.rollout.input`` and
    ``lightspan.rollout.expected`` (recorded when content capture is on and the caller gave an
    expected value). Equal inputs are kept once."""
    import json

    from lightspan.trainer.data import Task

    page = await store.query_rollouts(sort_by="start_time", sort_order="asc")
    tasks: list[Task] = []
    seen: set[str] = set()
    for r in page.items:
        if since is not None and r.start_time < since:
            continue
        for s in (await store.query_spans(r.rollout_id, "latest")).items:
            a = s.attributes
            if a.get("gen_ai.operation.name") != "invoke_workflow":
                continue
            if a.get("gen_ai.workflow.name") != workflow:
                break
            raw_in, raw_exp = a.get("lightspan.rollout.input"), a.get("lightspan.rollout.expected")
            if raw_in is not None and raw_exp is not None and raw_in not in seen:
                seen.add(raw_in)
                tasks.append(Task(r.rollout_id, json.loads(raw_in), json.loads(raw_exp)))
            break
    return tasks
