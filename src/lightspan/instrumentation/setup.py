"""``configure_tracing``: tracer provider, sampler, processors and exporters from the configuration.

Why one function: ``lightspan.configure(config)`` must turn ``agentLightning.*`` plus the
standard ``OTEL_*`` variables into a working pipeline in one call, and tests and embedding
applications must be able to swap the exporters (an ``InMemorySpanExporter``) or processors
without re-implementing the rest.

Where spans go (:func:`build_exporters`): the exporter stage decides, through its plug point
``lightspan.exporter.build_store_exporter(cfg, environ=...)``, so every target (a Collector set
by ``agentLightning.exporter.endpoint`` or ``OTEL_EXPORTER_OTLP_*``, the in-process store, the
store server) gets the same retries, spool and counters. Without the exporter stage installed,
first match wins:

1. ``agentLightning.exporter.endpoint`` is set: the SDK's OTLP exporter (``exporter.protocol``);
2. ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: OTLP as those
   variables (and ``OTEL_EXPORTER_OTLP_*_PROTOCOL``/``HEADERS``/...) say;
3. otherwise plain OTLP to the external store's intake (``/v1/traces`` over HTTP, or gRPC on
   ``store.grpc_address``); ``store.type: in_memory`` is an error (it needs the exporter stage).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from lightspan.config import ConfigError, LightspanConfig
from lightspan.instrumentation.instrumentor import CAPTURE_CONTENT_ENV, WorkflowInstrumentor
from lightspan.instrumentation.processor import (
    EMPTY_STATS,
    NonBlockingBatchProcessor,
    ProcessorStats,
)
from lightspan.instrumentation.sampling import make_sampler, ratio_from_env

log = logging.getLogger(__name__)

STORE_EXPORTER_MODULE = "lightspan.exporter"
STORE_EXPORTER_FACTORY = "build_store_exporter"
"""The exporter stage plugs in here: ``build_store_exporter(cfg, *, environ) -> SpanExporter``."""


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


def _otlp_exporter(
    protocol: str, endpoint: str | None, headers: dict[str, str] | None = None
) -> SpanExporter:
    """An OTLP exporter; ``endpoint=None`` lets it read the ``OTEL_EXPORTER_OTLP_*`` variables."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if endpoint is None:
            return OTLPSpanExporter(headers=headers)
        # "host:port" without a scheme means a plain-text local endpoint (a Collector, the store).
        insecure = not endpoint.startswith("https://")
        return OTLPSpanExporter(endpoint=endpoint, insecure=insecure, headers=headers)
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPSpanExporter,
        )

        if endpoint is None:
            return HTTPSpanExporter(headers=headers)
        if "://" not in endpoint:
            endpoint = f"http://{endpoint}"
        if urlsplit(endpoint).path in ("", "/"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        return HTTPSpanExporter(endpoint=endpoint, headers=headers)
    raise ConfigError(
        f"OTLP protocol {protocol!r} is not supported (agentLightning.exporter.protocol or "
        "OTEL_EXPORTER_OTLP_PROTOCOL): use grpc or http/protobuf"
    )


def _store_exporter_factory() -> Callable[..., SpanExporter] | None:
    """The exporter stage's ``build_store_exporter``, or ``None`` when it is not installed."""
    try:
        module = importlib.import_module(STORE_EXPORTER_MODULE)
    except ImportError:
        return None
    return getattr(module, STORE_EXPORTER_FACTORY, None)


def otlp_store_exporter(cfg: LightspanConfig) -> SpanExporter:
    """Plain OTLP to the external store's intake (used without the exporter stage)."""
    store = cfg.agentLightning.store
    if store.type.value == "in_memory":
        raise ConfigError(
            "agentLightning.store.type=in_memory needs the in-process store exporter "
            f"({STORE_EXPORTER_MODULE}.{STORE_EXPORTER_FACTORY}), which this installation "
            "lacks; use an external store or set agentLightning.exporter.endpoint"
        )
    headers = {"authorization": f"Bearer {store.token}"} if store.token else None
    if cfg.agentLightning.exporter.protocol == "grpc":
        address = store.grpc_address or f"{urlsplit(store.address).hostname}:4317"
        return _otlp_exporter("grpc", address, headers)
    return _otlp_exporter("http/protobuf", store.address.rstrip("/") + "/v1/traces", headers)


def build_exporters(
    cfg: LightspanConfig, environ: Mapping[str, str] | None = None
) -> list[SpanExporter]:
    """The exporters the configuration and environment ask for (see the module doc)."""
    env = os.environ if environ is None else environ
    factory = _store_exporter_factory()
    if factory is not None:
        return [factory(cfg, environ=env)]
    exp = cfg.agentLightning.exporter
    if exp.endpoint:
        return [_otlp_exporter(exp.protocol, exp.endpoint)]
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or exp.protocol
        )
        return [_otlp_exporter(protocol.strip().lower(), None)]
    return [otlp_store_exporter(cfg)]


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
    sized by ``agentLightning.exporter``); ``processors`` are added as they are (then no
    exporter is built unless ``exporters`` is given too). ``set_global`` makes the provider the
    global one, so user code's spans share the workflow's traces. Calling it again replaces
    the previous instrumentation (the previous handle should be shut down).
    """
    env = os.environ if environ is None else environ
    tracing = cfg.agentLightning.tracing
    ratio, source = ratio_from_env(tracing.sampling_ratio, env)
    provider = TracerProvider(resource=build_resource(cfg, env), sampler=make_sampler(ratio))
    procs: list[SpanProcessor] = list(processors or [])
    if exporters is None and processors is None:
        exporters = build_exporters(cfg, env)
    exp_cfg = cfg.agentLightning.exporter
    for exporter in exporters or ():
        procs.append(
            NonBlockingBatchProcessor(
                exporter,
                max_queue_size=exp_cfg.max_queue_size,
                max_export_batch_size=exp_cfg.max_export_batch_size,
                schedule_delay_ms=exp_cfg.schedule_delay_ms,
            )
        )
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
            capture_content=tracing.capture_content or _env_flag_in(env, CAPTURE_CONTENT_ENV),
        )
    log.info(
        "lightspan tracing on: sampling ratio %s (%s), %d processor(s)", ratio, source, len(procs)
    )
    return TracingHandle(provider, procs, instrumentor, ratio, source, list(exporters or ()))


def _env_flag_in(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")
