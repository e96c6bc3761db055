"""Tracing for ``lightspan demo``: the instrumentation and the store exporter into an in-process
in-memory LightningStore, and a report of what the store holds for the run.

Why a separate module: the demo (``lightspan.demo``) must run untraced when the tracing stages
are not installed; it imports this module only if it can. Everything here is the real
pipeline (engine listener -> SDK -> non-blocking processor -> LightningStoreSpanExporter ->
``InMemoryLightningStore``), configured as ``store.type: in_memory`` would configure it, with
prompts and completions captured and every trace kept.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from lightspan.config import parse_config
from lightspan.exporter import LightningStoreSpanExporter, exporter_from_config
from lightspan.instrumentation.setup import TracingHandle, configure_tracing
from lightspan.semconv import ANNOTATION_SPAN, REWARD_NAME, REWARD_VALUE

__all__ = ["InProcessTracing", "start_in_process_tracing"]

LLM_SPAN = "openai.chat.completion"
REWARD_SPAN = ANNOTATION_SPAN


def _reward_text(value: Any) -> str:
    """A reward as read from its span: two decimals, or ``-`` when missing."""
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


class InProcessTracing:
    """A running in-process tracing pipeline; :meth:`report` reads the store back."""

    def __init__(self, handle: TracingHandle, exporter: LightningStoreSpanExporter) -> None:
        self.handle = handle
        self.exporter = exporter

    @property
    def store(self) -> Any:
        return self.exporter.store

    def spans_of(self, rollout_id: str) -> list[Any]:
        """The stored spans of a rollout (after flushing what the processor still holds)."""
        self.handle.force_flush(30_000)
        store = self.exporter.store
        page = self.exporter.call_store(lambda: store.query_spans(rollout_id))
        return list(page.items)

    def report(self, console: Console, result: Any) -> None:
        """Print what the LightningStore holds for ``result``'s rollout."""
        rollout_id = getattr(result, "rollout_id", None)
        if not rollout_id:
            console.print("[yellow]tracing: this run has no rollout id (sampled out?)[/]")
            return
        spans = self.spans_of(rollout_id)
        store = self.exporter.store
        rollout = self.exporter.call_store(lambda: store.get_rollout_by_id(rollout_id))
        stats = self.exporter.stats()

        head = Table(title="LightningStore (in-process): the run's rollout")
        for col in ("rollout", "attempt", "status", "spans", "exported", "dropped"):
            head.add_column(col, overflow="fold")
        attempt = getattr(rollout, "attempt", None)
        head.add_row(
            rollout_id,
            getattr(attempt, "attempt_id", None) or getattr(result, "attempt_id", "-") or "-",
            getattr(rollout, "status", "missing"),
            str(len(spans)),
            str(stats.sent),
            str(stats.dropped + self.handle.stats().dropped),
        )
        console.print(head)

        kinds = Counter(
            (
                s.name,
                s.attributes.get("lightspan.step.kind")
                or s.attributes.get("gen_ai.operation.name")
                or "-",
            )
            for s in spans
        )
        by_name = Table(title="Spans by name and kind")
        by_name.add_column("name")
        by_name.add_column("kind")
        by_name.add_column("count", justify="right")
        for (name, kind), n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])):
            by_name.add_row(name, str(kind), str(n))
        console.print(by_name)

        names = {s.span_id: s.name for s in spans}
        calls = Table(title=f"LLM-call spans ({LLM_SPAN})")
        for col in ("under", "model", "input tok", "output tok", "finish", "ms"):
            left = col in ("under", "model", "finish")
            calls.add_column(col, justify="left" if left else "right", overflow="fold")
        in_total = out_total = 0
        for s in sorted((s for s in spans if s.name == LLM_SPAN), key=lambda s: s.start_time or 0):
            a = s.attributes
            in_tok = int(a.get("gen_ai.usage.input_tokens", 0) or 0)
            out_tok = int(a.get("gen_ai.usage.output_tokens", 0) or 0)
            in_total += in_tok
            out_total += out_tok
            finish = a.get("gen_ai.response.finish_reasons", [])
            ms = ((s.end_time or 0) - (s.start_time or 0)) * 1000
            calls.add_row(
                names.get(s.parent_id or "", "-"),
                str(a.get("gen_ai.request.model", "-")),
                str(in_tok),
                str(out_tok),
                ",".join(finish) if isinstance(finish, list) else str(finish),
                f"{ms:.0f}",
            )
        calls.add_row("[bold]total[/]", "", str(in_total), str(out_total), "", "")
        console.print(calls)

        rewards = [s for s in spans if s.name == REWARD_SPAN]
        reward_table = Table(title=f"Reward span ({REWARD_SPAN})")
        for col in ("span id", "parent", "name", "value"):
            reward_table.add_column(col, overflow="fold")
        for s in rewards:
            reward_table.add_row(
                s.span_id,
                names.get(s.parent_id or "", "-"),
                str(s.attributes.get(REWARD_NAME, "-")),
                _reward_text(s.attributes.get(REWARD_VALUE)),
            )
        if not rewards:
            reward_table.add_row("-", "-", "-", "no reward recorded")
        console.print(reward_table)

    def shutdown(self) -> None:
        """Flush, stop tracing and close the in-process store."""
        self.handle.shutdown()


def start_in_process_tracing(save_to: str | None = None, **tracing: Any) -> InProcessTracing:
    """Tracing on, into an in-memory LightningStore in this process (content captured, every
    trace kept); ``tracing`` overrides ``agentLightning.tracing`` keys. ``save_to``: a SQLite
    store file instead, which outlives the demo (``lightspan store serve --db`` serves it)."""
    cfg = parse_config(
        {
            "agentLightning": {
                "enabled": True,
                "store": {"type": "in_memory"},
                "tracing": {
                    "capture_content": True,
                    "sampling_ratio": 1.0,
                    "service_name": "lightspan-demo",
                    **tracing,
                },
                "exporter": {"schedule_delay_ms": 100},
            }
        },
        environ={},
    )
    if save_to is None:
        exporter = exporter_from_config(cfg, environ={})
    else:
        from lightspan.store.backends.factory import create_store

        exporter = LightningStoreSpanExporter.in_process(
            create_store("sqlite", db=save_to), owns_store=True
        )
    handle = configure_tracing(cfg, exporters=[exporter], set_global=False, environ={})
    return InProcessTracing(handle, exporter)
