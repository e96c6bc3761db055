"""``configure_tracing``: tracer provider, sampler, processors and exporters from the configuration.

Why one function: ``lightspan.configure(config)`` must turn ``agentLightning.*`` plus the
standard ``OTEL_*`` variables into a working pipeline in one call, and tests and embedding
applications must be able to swap the exporters (an ``InMemorySpanExporter``) or processors
without re-implementing the rest.

Where spans go (:func:`build_exporters`): the exporter stage decides
(:func:`lightspan.exporter.exporter_from_config`, imported as any module is), so every target (a
Collector set by ``agentLightning.exporter.endpoint`` or ``OTEL_EXPORTER_OTLP_*``, the in-process
store, the store server) gets the same retries, spool and counters, and the endpoints are derived
from the configuration in one place (``lightspan.exporter.factory``).

The processor: :class:`NonBlockingBatchProcessor`, sized by what ``agentLightning.exporter`` sets
explicitly, else by the ``OTEL_BSP_*`` variables, else by lightspan's defaults.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from lightspan.config import LightspanConfig, env_flag
from lightspan.exporter import exporter_from_config
from lightspan.instrumentation.instrumentor import CAPTURE_CONTENT_ENV, WorkflowInstrumentor
from lightspan.instrumentation.processor import (
    EMPTY_STATS,
    NonBlockingBatchProcessor,
    ProcessorStats,
)
from lightspan.instrumentation.sampling import make_sampler, ratio_from_env

log = logging.getLogger(__name__)

PROCESSOR_SETTINGS = ("max_queue_size", "max_export_batch_size", "schedule_delay_ms")
"""``agentLightning.exporter`` keys that size the processor when the configuration sets them."""


@dataclass
class TracingHandle:
    """What :func:`configure_tracing` set up; ``shutdown()`` flushes and undoes it."""

    provider: TracerProvider
    processors: list[SpanProcessor]
    instrumentor: WorkflowInstrumentor | None
    sampling_ratio: float
    sampling_source: str
    exporters: list[SpanExporter] = field(default_factory=list)

    def stats(self) -> ProcessorStats:
        """Counters summed over the non-blocking processors (received, exported, dropped...)."""
        total = EMPTY_STATS
        for p in self.processors:
            if isinstance(p, NonBlockingBatchProcessor):
                total = total + p.stats()
        return total

    @property
    def dropped(self) -> int:
        return self.stats().dropped

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.provider.force_flush(timeout_millis))

    def shutdown(self) -> None:
        """Stop tracing new runs, export what is queued, shut the exporters down."""
        if self.instrumentor is not None and self.instrumentor.is_instrumented_by_opentelemetry:
            self.instrumentor.uninstrument()
        self.provider.shutdown()


def build_exporters(
    cfg: LightspanConfig, environ: Mapping[str, str] | None = None
) -> list[SpanExporter]:
    """The exporters the configuration and environment ask for: the store exporter."""
    return [exporter_from_config(cfg, environ=os.environ if environ is None else environ)]


def build_resource(cfg: LightspanConfig, environ: Mapping[str, str] | None = None) -> Resource:
    """``service.name`` from the configuration unless ``OTEL_SERVICE_NAME`` says otherwise;
    ``OTEL_RESOURCE_ATTRIBUTES`` are merged in by the SDK."""
    env = os.environ if environ is None else environ
    attrs: dict[str, Any] = {}
    if not env.get("OTEL_SERVICE_NAME"):
        attrs[SERVICE_NAME] = cfg.agentLightning.tracing.service_name
    return Resource.create(attrs)


def configure_tracing(
    cfg: LightspanConfig,
    *,
    exporters: Sequence[SpanExporter] | None = None,
    processors: Iterable[SpanProcessor] | None = None,
    set_global: bool = True,
    instrument: bool = True,
    environ: Mapping[str, str] | None = None,
) -> TracingHandle:
    """Build the tracing pipeline and instrument the engine.

    ``exporters`` replace :func:`build_exporters` (each gets a :class:`NonBlockingBatchProcessor`
    sized by ``agentLightning.exporter``, then ``OTEL_BSP_*``); ``processors`` are added as they
    are (then no exporter is built unless ``exporters`` is given too). ``set_global`` makes the
    provider the global one, so user code's spans share the workflow's traces. Calling it again
    replaces the previous instrumentation (the previous handle should be shut down).
    """
    env = os.environ if environ is None else environ
    tracing = cfg.agentLightning.tracing
    ratio, source = ratio_from_env(tracing.sampling_ratio, env)
    provider = TracerProvider(resource=build_resource(cfg, env), sampler=make_sampler(ratio))
    procs: list[SpanProcessor] = list(processors or [])
    if exporters is None and processors is None:
        exporters = build_exporters(cfg, env)
    exp_cfg = cfg.agentLightning.exporter
    # Set in the configuration (file or LIGHTSPAN_* variable): wins over OTEL_BSP_*, as an
    # argument wins over the variables in the SDK; defaults leave the variables their say.
    sizing = {k: getattr(exp_cfg, k) for k in PROCESSOR_SETTINGS if k in exp_cfg.model_fields_set}
    for exporter in exporters or ():
        procs.append(NonBlockingBatchProcessor(exporter, environ=env, **sizing))
    for p in procs:
        provider.add_span_processor(p)
    if set_global:
        current = trace.get_tracer_provider()
        if isinstance(current, trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        else:
            log.warning(
                "lightspan tracing: a global tracer provider (%s) is already set; workflow spans "
                "use lightspan's own provider, other spans keep the existing one",
                type(current).__name__,
            )
    instrumentor: WorkflowInstrumentor | None = None
    if instrument:
        instrumentor = WorkflowInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(
            tracer_provider=provider,
            capture_content=tracing.capture_content or env_flag(CAPTURE_CONTENT_ENV, env),
        )
    log.info(
        "lightspan tracing on: sampling ratio %s (%s), %d processor(s)", ratio, source, len(procs)
    )
    return TracingHandle(provider, procs, instrumentor, ratio, source, list(exporters or ()))
