"""``WorkflowInstrumentor``: the OpenTelemetry instrumentor of the lightspan engine.

Why a ``BaseInstrumentor``: it is how OpenTelemetry users switch instrumentation on, by hand
(``WorkflowInstrumentor().instrument(tracer_provider=...)``) or automatically
(``opentelemetry-instrument python app.py`` finds it under the ``opentelemetry_instrumentor``
entry point ``lightspan``). Instrumenting registers one engine listener; uninstrumenting
removes it, and runs started afterwards cost exactly what untraced runs cost.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from lightspan import __version__
from lightspan.config import env_flag
from lightspan.engine.events import add_listener, remove_listener
from lightspan.instrumentation.enrich import RolloutAttributesProcessor
from lightspan.instrumentation.listener import SpanListener

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI instrumentations' standard switch for prompt/completion capture."""

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"


class WorkflowInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces every workflow run (see :mod:`lightspan.instrumentation.listener`).

    ``instrument()`` keyword arguments: ``tracer_provider`` (default: the global one),
    ``capture_content`` (default: ``$OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``),
    ``capture_runner_content`` (default True: runner rollouts always carry their prompts).
    """

    _listener: SpanListener | None = None
    _enriched: weakref.WeakSet[Any] = weakref.WeakSet()
    """SDK providers that already have a :class:`RolloutAttributesProcessor` (added once each:
    the SDK cannot remove a processor, and a second one would only repeat the work)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return []

    def _instrument(self, **kwargs: Any) -> None:
        capture = kwargs.get("capture_content")
        if capture is None:
            capture = env_flag(CAPTURE_CONTENT_ENV)
        provider = kwargs.get("tracer_provider") or trace.get_tracer_provider()
        if hasattr(provider, "add_span_processor") and provider not in self._enriched:
            provider.add_span_processor(RolloutAttributesProcessor())
            self._enriched.add(provider)
        tracer = trace.get_tracer(
            "lightspan.instrumentation",
            __version__,
            tracer_provider=kwargs.get("tracer_provider"),
            schema_url=SCHEMA_URL,
        )
        self._listener = SpanListener(
            tracer,
            capture_content=bool(capture),
            capture_runner_content=kwargs.get("capture_runner_content", True),
        )
        add_listener(self._listener)

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._listener is not None:
            remove_listener(self._listener)
            self._listener = None

    @property
    def listener(self) -> SpanListener | None:
        """The registered listener while instrumented."""
        return self._listener
