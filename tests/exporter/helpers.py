"""Shared pieces of the exporter tests: a fork/join workflow with LLM tasks, tracing wired to a
store exporter plus an in-memory copy of every span the SDK produced (the ground truth)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lightspan.config import LightspanConfig, parse_config
from lightspan.engine import (
    LLMResource,
    PriceTable,
    PromptTemplate,
    ResourceSet,
    Workflow,
    fork,
    llm_task,
    sequence,
    task,
)
from lightspan.exporter import LightningStoreSpanExporter
from lightspan.instrumentation.setup import TracingHandle, configure_tracing

MODEL = "small-model"
PRICES = PriceTable({MODEL: {"input": 1.0, "output": 2.0}})


def config(**al: Any) -> LightspanConfig:
    """Tracing on, content captured, every trace kept, a short processor delay."""
    data = {
        "enabled": True,
        "tracing": {"capture_content": True, "sampling_ratio": 1.0},
        **al,
    }
    data.setdefault("exporter", {})
    data["exporter"] = {"schedule_delay_ms": 50, **data["exporter"]}
    return parse_config({"agentLightning": data}, environ={})


def fork_join_workflow(base_url: str, name: str = "fj") -> Workflow:
    """plan -> fork(two LLM tasks) -> a reward of 0.5: eight spans per run (see EXPECTED_NAMES)."""
    resources = ResourceSet(
        "rs-exporter01",
        {
            "ask": PromptTemplate("Q: {input}"),
            "sys": PromptTemplate("Be brief."),
            "default": LLMResource(
                base_url, MODEL, sampling_parameters={"max_tokens": 16, "temperature": 0}
            ),
        },
    )
    return Workflow(
        name,
        sequence(
            "s",
            task("prep", lambda x: x),
            fork(
                "f",
                [
                    llm_task("a", prompt="ask", system="sys"),
                    llm_task("b", prompt="ask", system="sys"),
                ],
            ),
        ),
        resources=resources,
        prices=PRICES,
        evaluator=lambda inp, out, expected: 0.5,
    )


CORE_NAMES = {
    "sequence s": 1,
    "task prep": 1,
    "fork f": 1,
    "llm a": 1,
    "llm b": 1,
    "openai.chat.completion": 2,
    "agentlightning.annotation": 1,
}
"""Spans every run of :func:`fork_join_workflow` has (the instrumentation may add more, e.g.
per-branch spans; tests compare the full set against what the SDK produced)."""


def assert_core_names(names: Counter[str], workflow: str = "fj") -> None:
    for name, n in {f"invoke_workflow {workflow}": 1, **CORE_NAMES}.items():
        assert names[name] == n, f"{name!r}: {names[name]} span(s), expected {n}; all: {names}"


@dataclass
class Pipeline:
    """configure_tracing with the exporter under test and an in-memory witness."""

    handle: TracingHandle
    exporter: LightningStoreSpanExporter
    witness: InMemorySpanExporter

    def flush(self) -> None:
        assert self.handle.force_flush(30_000), "processor force_flush timed out"

    def produced(self) -> list[ReadableSpan]:
        self.flush()
        return list(self.witness.get_finished_spans())

    def shutdown(self) -> None:
        self.handle.shutdown()


def start_pipeline(cfg: LightspanConfig, exporter: LightningStoreSpanExporter) -> Pipeline:
    witness = InMemorySpanExporter()
    handle = configure_tracing(cfg, exporters=[exporter, witness], set_global=False, environ={})
    return Pipeline(handle, exporter, witness)


def by_id(spans: list[Any]) -> dict[str, Any]:
    """Store Spans (models) by span_id; asserts no span id appears twice."""
    out: dict[str, Any] = {}
    for s in spans:
        assert s.span_id not in out, f"span {s.span_id} ({s.name}) stored twice"
        out[s.span_id] = s
    return out
