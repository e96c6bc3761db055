"""The LightningStore data model, field for field the JSON of Agent Lightning v0.3.

Why a copy of the wire format and not an import: Agent Lightning is ~800 MB of dependencies and
must stay out of ours, yet real Agent Lightning clients talk to our server and our client talks
to theirs. So these models reproduce the v0.3 JSON exactly: field names, status strings, times
as float seconds, ``null`` for absent optionals. See ``/work/shared/lightningstore-protocol.md``.

Unknown fields are kept where v0.3 keeps them (spans and their parts) so that a span written
by a newer producer round-trips unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar, overload

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from lightspan.store.api.limits import check_nesting

__all__ = [
    "FINISHED_ROLLOUT_STATUSES",
    "LLM",
    "QUEUING_ROLLOUT_STATUSES",
    "RUNNING_ROLLOUT_STATUSES",
    "Attempt",
    "AttemptStatus",
    "AttemptedRollout",
    "AttributeValue",
    "Attributes",
    "EnqueueRolloutRequest",
    "Event",
    "Link",
    "NamedResources",
    "OtelResource",
    "PaginatedResult",
    "PromptTemplate",
    "ProxyLLM",
    "Resource",
    "ResourceUnion",
    "ResourcesUpdate",
    "Rollout",
    "RolloutConfig",
    "RolloutMode",
    "RolloutStatus",
    "Span",
    "SpanContext",
    "StatusCode",
    "TraceStatus",
    "Worker",
    "WorkerStatus",
    "generate_id",
    "new_attempt_id",
    "new_resources_id",
    "new_rollout_id",
]

# --------------------------------------------------------------------------- statuses

RolloutStatus = Literal[
    "queuing", "preparing", "running", "failed", "succeeded", "cancelled", "requeuing"
]
"""Status of a rollout (v0.3 strings)."""

AttemptStatus = Literal["preparing", "running", "failed", "succeeded", "unresponsive", "timeout"]
"""Status of one attempt at a rollout (v0.3 strings)."""

WorkerStatus = Literal["idle", "busy", "unknown"]
RolloutMode = Literal["train", "val", "test"]
StatusCode = Literal["UNSET", "OK", "ERROR"]

QUEUING_ROLLOUT_STATUSES: frozenset[str] = frozenset({"queuing", "requeuing"})
"""A rollout in one of these statuses waits in the queue (and only then)."""
RUNNING_ROLLOUT_STATUSES: frozenset[str] = frozenset({"preparing", "running"})
FINISHED_ROLLOUT_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

# --------------------------------------------------------------------------- ids


def generate_id(length: int) -> str:
    """``length`` random lowercase hex characters (from a UUID4, so collisions are negligible)."""
    return uuid.uuid4().hex[:length]


def new_rollout_id() -> str:
    return "ro-" + generate_id(12)


def new_attempt_id() -> str:
    """Attempts are scoped to their rollout, so 8 hex characters suffice (as in v0.3)."""
    return "at-" + generate_id(8)


def new_resources_id() -> str:
    return "rs-" + generate_id(12)


# --------------------------------------------------------------------------- rollouts


class RolloutConfig(BaseModel):
    """Retry and health policy of a rollout."""

    timeout_seconds: float | None = None
    """An attempt running longer than this becomes ``timeout``; ``None``: never."""
    unresponsive_seconds: float | None = None
    """An attempt without heartbeat for this long becomes ``unresponsive``; ``None``: never."""
    max_attempts: int = Field(default=1, ge=1)
    """Attempts allowed in total, the first included."""
    retry_condition: list[AttemptStatus] = Field(default_factory=list)
    """Attempt statuses that requeue the rollout (while attempts remain)."""


class Attempt(BaseModel):
    """One execution of a rollout by a worker; ``sequence_id`` counts 1, 2, ... per rollout."""

    rollout_id: str
    attempt_id: str
    sequence_id: int
    start_time: float
    end_time: float | None = None
    status: AttemptStatus = "preparing"
    worker_id: str | None = None
    last_heartbeat_time: float | None = None
    metadata: dict[str, Any] | None = None


class Rollout(BaseModel):
    """A unit of work (one task input) and its lifecycle."""

    rollout_id: str
    input: Any
    start_time: float
    end_time: float | None = None
    mode: RolloutMode | None = None
    resources_id: str | None = None
    status: RolloutStatus = "queuing"
    config: RolloutConfig = Field(default_factory=RolloutConfig)
    metadata: dict[str, Any] | None = None


class AttemptedRollout(Rollout):
    """A rollout with its latest (or just created) attempt attached."""

    attempt: Attempt

    @model_validator(mode="after")
    def _same_rollout(self) -> AttemptedRollout:
        if self.attempt.rollout_id != self.rollout_id:
            raise ValueError(
                f"attempt {self.attempt.attempt_id} belongs to rollout {self.attempt.rollout_id}, "
                f"not {self.rollout_id}"
            )
        return self


class EnqueueRolloutRequest(BaseModel):
    """What a caller supplies to queue a rollout; the store fills in the rest."""

    input: Annotated[Any, AfterValidator(check_nesting)]
    mode: RolloutMode | None = None
    resources_id: str | None = None
    config: RolloutConfig | None = None
    metadata: Annotated[dict[str, Any], AfterValidator(check_nesting)] | None = None


class Worker(BaseModel):
    """A runner as the store sees it: derived from its dequeues, attempts and heartbeats."""

    worker_id: str
    status: WorkerStatus = "unknown"
    heartbeat_stats: dict[str, Any] | None = None
    last_heartbeat_time: float | None = None
    last_dequeue_time: float | None = None
    last_busy_time: float | None = None
    last_idle_time: float | None = None
    current_rollout_id: str | None = None
    current_attempt_id: str | None = None


T_item = TypeVar("T_item")


class PaginatedResult(BaseModel, Generic[T_item]):
    """One page of a query: ``items`` plus the ``limit``/``offset`` asked and the ``total`` matched.

    It also behaves as a read-only sequence of its items, as v0.3's does, so code that treats a
    query result as a list keeps working.
    """

    items: list[T_item]
    limit: int
    offset: int
    total: int

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> T_item: ...
    @overload
    def __getitem__(self, index: slice) -> list[T_item]: ...
    def __getitem__(self, index: int | slice) -> T_item | list[T_item]:
        return self.items[index]

    def __iter__(self) -> Iterator[T_item]:  # type: ignore[override]
        return iter(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


# --------------------------------------------------------------------------- resources


class Resource(BaseModel):
    """Base of tunable resources handed to runners; ``resource_type`` discriminates."""

    resource_type: Any


class LLM(Resource):
    """An OpenAI-compatible endpoint and the model and sampling parameters to call it with."""

    resource_type: Literal["llm"] = "llm"
    endpoint: str
    model: str
    api_key: str | None = None
    sampling_parameters: dict[str, Any] = Field(default_factory=dict)


class ProxyLLM(LLM):
    """An LLM reached through a proxy that attributes calls to rollout/attempt (v0.3 LLMProxy)."""

    resource_type: Literal["proxy_llm"] = "proxy_llm"  # type: ignore[assignment]

    def get_base_url(self, rollout_id: str | None, attempt_id: str | None) -> str:
        """The endpoint routed for one attempt: ``.../rollout/{r}/attempt/{a}[/v1]``."""
        if rollout_id is None and attempt_id is None:
            return self.endpoint
        if not (isinstance(rollout_id, str) and isinstance(attempt_id, str)):
            raise ValueError("rollout_id and attempt_id must both be strings or both be None")
        prefix = self.endpoint.rstrip("/")
        has_v1 = prefix.endswith("/v1")
        if has_v1:
            prefix = prefix[:-3]
        prefix += f"/rollout/{rollout_id}/attempt/{attempt_id}"
        return prefix + "/v1" if has_v1 else prefix


class PromptTemplate(Resource):
    """A prompt template; only the ``f-string`` engine can be rendered by :meth:`format`."""

    resource_type: Literal["prompt_template"] = "prompt_template"
    template: str
    engine: Literal["jinja", "f-string", "poml"]

    def format(self, **kwargs: Any) -> str:
        if self.engine != "f-string":
            raise NotImplementedError(f"rendering {self.engine} templates is not supported")
        return self.template.format(**kwargs)


ResourceUnion = Annotated[LLM | ProxyLLM | PromptTemplate, Field(discriminator="resource_type")]
NamedResources = dict[str, ResourceUnion]
"""Resources by name, e.g. ``{"main_llm": LLM(...), "system_prompt": PromptTemplate(...)}``."""


class ResourcesUpdate(BaseModel):
    """A versioned snapshot of named resources; the latest ``update_time`` is "the latest"."""

    resources_id: str
    create_time: float
    update_time: float
    version: int
    resources: NamedResources


# --------------------------------------------------------------------------- spans

AttributeValue = str | bool | int | float | list[str] | list[bool] | list[int] | list[float]
Attributes = dict[str, Any]
"""OpenTelemetry attributes. Values are kept as given (str, bool, int, float or lists of those)."""


class SpanContext(BaseModel):
    model_config = ConfigDict(extra="allow")

    trace_id: str
    span_id: str
    is_remote: bool
    trace_state: dict[str, str]


class TraceStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    status_code: StatusCode
    description: str | None = None


class Event(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    attributes: Attributes
    timestamp: float | None = None


class Link(BaseModel):
    model_config = ConfigDict(extra="allow")

    context: SpanContext
    attributes: Attributes | None = None


class OtelResource(BaseModel):
    """The OpenTelemetry resource of a span (service name etc.), not a tunable resource."""

    model_config = ConfigDict(extra="allow")

    attributes: Attributes
    schema_url: str


class Span(BaseModel):
    """One span as the store keeps it; ``(rollout_id, attempt_id, span_id)`` is its key.

    Unknown fields are kept (``extra="allow"``), as in v0.3.
    """

    model_config = ConfigDict(extra="allow")

    rollout_id: str
    attempt_id: str
    sequence_id: int
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    status: TraceStatus
    attributes: Attributes
    events: list[Event]
    links: list[Link]
    start_time: float | None
    end_time: float | None
    context: SpanContext | None
    parent: SpanContext | None
    resource: OtelResource

    @classmethod
    def build(
        cls,
        *,
        rollout_id: str,
        attempt_id: str,
        sequence_id: int,
        name: str,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_id: str | None = None,
        attributes: Attributes | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
        status_code: StatusCode = "UNSET",
        resource_attributes: Attributes | None = None,
    ) -> Span:
        """A span with the common fields filled in (random ids if omitted): for tests and tools."""
        trace_id = trace_id or uuid.uuid4().hex
        span_id = span_id or uuid.uuid4().hex[:16]
        return cls(
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            sequence_id=sequence_id,
            trace_id=trace_id,
            span_id=span_id,
            parent_id=parent_id,
            name=name,
            status=TraceStatus(status_code=status_code),
            attributes=dict(attributes or {}),
            events=[],
            links=[],
            start_time=start_time,
            end_time=end_time,
            context=SpanContext(
                trace_id=trace_id, span_id=span_id, is_remote=False, trace_state={}
            ),
            parent=(
                SpanContext(trace_id=trace_id, span_id=parent_id, is_remote=False, trace_state={})
                if parent_id
                else None
            ),
            resource=OtelResource(attributes=dict(resource_attributes or {}), schema_url=""),
        )


def as_sequence(items: Sequence[T_item] | None) -> list[T_item]:
    """A list copy of an optional sequence (``None`` -> empty)."""
    return list(items) if items is not None else []
