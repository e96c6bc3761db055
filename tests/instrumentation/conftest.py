"""Fixtures of the instrumentation tests: tracing configured with an in-memory exporter.

The provider is not made global (``set_global=False``): each test gets a fresh pipeline, and
user-code spans in tests come from ``traced.tracer`` (the same provider as the workflow's).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from lightspan.config import LightspanConfig, parse_config
from lightspan.instrumentation.setup import TracingHandle, configure_tracing


@dataclass
class Traced:
    handle: TracingHandle
    exporter: InMemorySpanExporter
    tracer: Tracer

    def spans(self) -> list[ReadableSpan]:
        assert self.handle.force_flush(10_000), "force_flush timed out"
        return list(self.exporter.get_finished_spans())

    def traces(self) -> dict[int, list[ReadableSpan]]:
        out: dict[int, list[ReadableSpan]] = defaultdict(list)
        for s in self.spans():
            out[s.context.trace_id].append(s)
        return dict(out)


def make_config(**tracing: Any) -> LightspanConfig:
    return parse_config({"agentLightning": {"enabled": True, "tracing": tracing}}, environ={})


def start_tracing(cfg: LightspanConfig | None = None, **kw: Any) -> Traced:
    exporter = InMemorySpanExporter()
    handle = configure_tracing(
        cfg or make_config(), exporters=[exporter], set_global=False, environ={}, **kw
    )
    return Traced(handle, exporter, handle.provider.get_tracer("user-code"))


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = start_tracing()
    try:
        yield t
    finally:
        t.handle.shutdown()


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    """Spans by name (names must be unique in the trace under test)."""
    out: dict[str, ReadableSpan] = {}
    for s in spans:
        assert s.name not in out, f"span name {s.name!r} is not unique"
        out[s.name] = s
    return out


def shape(spans: list[ReadableSpan]) -> tuple[Any, ...]:
    """The span tree as nested ``(name, (children...))``, children sorted by name.

    Asserts there is exactly one root and that every parent is in the trace.
    """
    ids = {s.context.span_id for s in spans}
    children: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for s in spans:
        parent = s.parent.span_id if s.parent is not None else None
        assert parent is None or parent in ids, f"span {s.name!r} has a parent outside the trace"
        children[parent].append(s)
    roots = children[None]
    assert len(roots) == 1, f"expected one root span, got {[r.name for r in roots]}"

    def node(s: ReadableSpan) -> tuple[Any, ...]:
        kids = sorted(children[s.context.span_id], key=lambda c: c.name)
        return (s.name, tuple(node(k) for k in kids))

    return node(roots[0])
