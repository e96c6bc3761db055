"""The LightningStore span exporter: OpenTelemetry SDK spans into Agent Lightning's store.

* :class:`LightningStoreSpanExporter`: in-process (an ``InMemoryLightningStore`` or any
  ``LightningStore`` object, on the exporter's own event-loop thread; the OTLP bytes a server
  would get, converted by the store's one conversion) or remote
  (OTLP/gRPC or OTLP/HTTP to the store server or a Collector), with retries, backoff and an
  on-disk spool that is replayed when the target is back.
* :func:`exporter_from_config`: the right one for ``agentLightning.store.type`` /
  ``exporter.*`` / ``OTEL_EXPORTER_OTLP_*`` (what ``lightspan.configure()`` uses).
* :class:`SpanEncoder`: OTLP bytes of SDK spans, as the SDK's encoder writes them, faster.

See docs/exporter.md.
"""

from lightspan.exporter.encode import SpanEncoder
from lightspan.exporter.exporter import LightningStoreSpanExporter
from lightspan.exporter.factory import (
    exporter_from_config,
    spool_dir_for,
    store_otlp_endpoint,
    target_from_config,
)
from lightspan.exporter.spool import Spool, SpoolError
from lightspan.exporter.stats import ExportStats
from lightspan.exporter.transport import OtlpTarget, SendError, resolve_target

__all__ = [
    "ExportStats",
    "LightningStoreSpanExporter",
    "OtlpTarget",
    "SendError",
    "SpanEncoder",
    "Spool",
    "SpoolError",
    "exporter_from_config",
    "resolve_target",
    "spool_dir_for",
    "store_otlp_endpoint",
    "target_from_config",
]
