"""The LightningStore: Agent Lightning v0.3's control plane (rollouts, attempts, spans, resources).

The folders follow a span from the exporter to its row:

* ``server/``: ``lightspan store serve`` (HTTP app, REST API, auth, metrics, dashboard, CLI);
* ``intake/``: OTLP/HTTP and OTLP/gRPC endpoints, the one conversion (OTLP bytes -> ``SpanRow``,
  Rust or the Python specification ``otlp.py``) and ``ingest`` (store the rows, report rejections);
* ``core/``: the rules every backend shares (``CoreStore``: queue, attempts, span writes and
  reads, health);
* ``backends/``: ``memory``, ``sqlite`` and ``postgres`` (``factory.open_store`` picks one);
* ``api/``: the interface (``base.LightningStore``), models, query rules, limits, and the HTTP
  client of a remote store (``client.LightningStoreClient``).

Importing this package imports no database driver: the backends and the client named below are
imported when first used (``from lightspan.store import open_store``).
"""

import importlib
from typing import Any

from lightspan.store.api.base import (
    UNSET,
    AddSpansResult,
    AttemptUpdate,
    InvalidRequestError,
    LightningStore,
    NotFoundError,
    SpanOutcome,
    StoreError,
)
from lightspan.store.api.models import (
    LLM,
    Attempt,
    AttemptedRollout,
    EnqueueRolloutRequest,
    NamedResources,
    PaginatedResult,
    PromptTemplate,
    ProxyLLM,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    Span,
    SpanContext,
    TraceStatus,
    Worker,
)

_LAZY = {
    "open_store": "lightspan.store.backends.factory",
    "create_store": "lightspan.store.backends.factory",
    "InMemoryLightningStore": "lightspan.store.backends.memory",
    "SqliteLightningStore": "lightspan.store.backends.sqlite",
    "PostgresLightningStore": "lightspan.store.backends.postgres",
    "LightningStoreClient": "lightspan.store.api.client",
}


def __getattr__(name: str) -> Any:
    """The backends, the factory and the client, imported on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lightspan.store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "LLM",
    "UNSET",
    "AddSpansResult",
    "Attempt",
    "AttemptUpdate",
    "AttemptedRollout",
    "EnqueueRolloutRequest",
    "InMemoryLightningStore",
    "InvalidRequestError",
    "LightningStore",
    "LightningStoreClient",
    "NamedResources",
    "NotFoundError",
    "PaginatedResult",
    "PostgresLightningStore",
    "PromptTemplate",
    "ProxyLLM",
    "ResourcesUpdate",
    "Rollout",
    "RolloutConfig",
    "Span",
    "SpanContext",
    "SpanOutcome",
    "SqliteLightningStore",
    "StoreError",
    "TraceStatus",
    "Worker",
    "create_store",
    "open_store",
]
