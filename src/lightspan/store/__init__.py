"""The LightningStore: Agent Lightning v0.3's control plane (rollouts, attempts, spans, resources).

``lightspan.store.base.LightningStore`` is the interface; backends: ``memory`` (in-process),
``sqlite`` (file, the default for ``lightspan store serve``) and ``postgres`` (shared by several
servers). ``open_store`` picks one by name. Importing this package imports no database driver.
"""

from .base import (
    UNSET,
    AddSpansResult,
    AttemptUpdate,
    InvalidRequestError,
    LightningStore,
    NotFoundError,
    SpanOutcome,
    StoreError,
)
from .models import (
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

__all__ = [
    "LLM",
    "UNSET",
    "AddSpansResult",
    "Attempt",
    "AttemptUpdate",
    "AttemptedRollout",
    "EnqueueRolloutRequest",
    "InvalidRequestError",
    "LightningStore",
    "NamedResources",
    "NotFoundError",
    "PaginatedResult",
    "PromptTemplate",
    "ProxyLLM",
    "ResourcesUpdate",
    "Rollout",
    "RolloutConfig",
    "Span",
    "SpanContext",
    "SpanOutcome",
    "StoreError",
    "TraceStatus",
    "Worker",
]
