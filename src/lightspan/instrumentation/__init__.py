"""OpenTelemetry instrumentation of the lightspan engine (imported only when tracing is on).

* :class:`WorkflowInstrumentor` registers the span listener (also found by
  ``opentelemetry-instrument`` through the ``opentelemetry_instrumentor`` entry point).
* :func:`lightspan.instrumentation.setup.configure_tracing` builds the tracer provider,
  sampler, processor and exporters from the configuration (``lightspan.configure`` calls it).
"""

from lightspan.instrumentation.instrumentor import WorkflowInstrumentor
from lightspan.instrumentation.listener import SpanListener
from lightspan.instrumentation.processor import NonBlockingBatchProcessor, ProcessorStats
from lightspan.instrumentation.sampling import KEEP_ATTRIBUTE, RolloutAwareSampler, make_sampler

__all__ = [
    "KEEP_ATTRIBUTE",
    "NonBlockingBatchProcessor",
    "ProcessorStats",
    "RolloutAwareSampler",
    "SpanListener",
    "WorkflowInstrumentor",
    "make_sampler",
]
