"""The LightningStore interface: what every backend, the HTTP client and the server agree on.

Why an abstract class with Agent Lightning v0.3's method names and signatures: algorithms and
runners written for Agent Lightning call these methods by name, and the server maps each REST
route onto one of them, so one interface serves the in-process store (``store.type:
in_memory``), the persistent backends and the remote client alike.

Errors are typed so that the server can map them onto HTTP statuses without string matching:
:class:`NotFoundError` (404: an unknown rollout or attempt, named in the message) and
:class:`InvalidRequestError` (400: bad pagination, sort field, filter logic or a ``null`` where a
value is required). Both subclass :class:`ValueError`, which is what v0.3 raises, so code written
against v0.3 that catches ``ValueError`` keeps working.

Our extension (``auto_register_rollouts``, on by default): spans for a rollout the store has never
seen register that rollout on first sight, with a ``running`` attempt, and its status follows
the run's root span (see :mod:`lightspan.store.core.lifecycle`). The reference store rejects them.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

from lightspan.store.api.limits import MAX_PAGE_LIMIT, MAX_SQL_INTEGER
from lightspan.store.api.models import (
    Attempt,
    AttemptedRollout,
    AttemptStatus,
    EnqueueRolloutRequest,
    NamedResources,
    PaginatedResult,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutStatus,
    Span,
    Worker,
    WorkerStatus,
)
from lightspan.store.api.query import Query, conds_from_params
from lightspan.store.intake.span_row import SpanRow

__all__ = [
    "ATTEMPT_SORT_FIELDS",
    "RESOURCES_SORT_FIELDS",
    "ROLLOUT_SORT_FIELDS",
    "SPAN_SORT_FIELDS",
    "UNSET",
    "WORKER_SORT_FIELDS",
    "AddSpansResult",
    "AttemptUpdate",
    "InvalidRequestError",
    "LightningStore",
    "NotFoundError",
    "SpanOutcome",
    "StoreError",
    "Unset",
    "given",
    "paginated",
    "validate_page",
]


class StoreError(Exception):
    """Base of the errors a store raises on purpose (as opposed to bugs or lost connections)."""


class NotFoundError(StoreError, ValueError):
    """An unknown rollout or attempt (the message names it). The server answers 404."""


class InvalidRequestError(StoreError, ValueError):
    """A request the store cannot honour as asked (the message says why). The server answers 400."""


class _UnsetType:
    """Sentinel: "leave this field unchanged", as opposed to an explicit ``None``."""

    __slots__ = ()
    _instance: _UnsetType | None = None

    def __new__(cls) -> _UnsetType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (_UnsetType, ())

    def __bool__(self) -> bool:
        return False


UNSET: Any = _UnsetType()
Unset = _UnsetType


def given(**fields: Any) -> dict[str, Any]:
    """The fields a caller actually passed (not :data:`UNSET`), in order: what an update changes."""
    return {name: value for name, value in fields.items() if value is not UNSET}


# Fields a query may sort by: the scalar fields of each model (v0.3 allows "a numeric or string
# field"); anything else is an InvalidRequestError rather than a silent no-op.
ROLLOUT_SORT_FIELDS = frozenset(
    {"rollout_id", "start_time", "end_time", "mode", "resources_id", "status"}
)
ATTEMPT_SORT_FIELDS = frozenset(
    {
        "rollout_id",
        "attempt_id",
        "sequence_id",
        "start_time",
        "end_time",
        "status",
        "worker_id",
        "last_heartbeat_time",
    }
)
WORKER_SORT_FIELDS = frozenset(
    {
        "worker_id",
        "status",
        "last_heartbeat_time",
        "last_dequeue_time",
        "last_busy_time",
        "last_idle_time",
        "current_rollout_id",
        "current_attempt_id",
    }
)
RESOURCES_SORT_FIELDS = frozenset({"resources_id", "create_time", "update_time", "version"})
SPAN_SORT_FIELDS = frozenset(
    {
        "rollout_id",
        "attempt_id",
        "sequence_id",
        "trace_id",
        "span_id",
        "parent_id",
        "name",
        "start_time",
        "end_time",
    }
)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_page(
    *,
    limit: int,
    offset: int,
    sort_by: str | None,
    sort_order: str,
    sortable: frozenset[str],
    what: str,
    filter_logic: str = "and",
) -> None:
    """Raise :class:`InvalidRequestError` for pagination/sort/filter options v0.3 answers 400 to."""
    if not isinstance(limit, int) or limit == 0 or limit < -1 or limit > MAX_PAGE_LIMIT:
        raise InvalidRequestError(
            f"limit must be a positive integer up to {MAX_PAGE_LIMIT} or -1 for no limit, "
            f"got {_short(limit)}"
        )
    if not isinstance(offset, int) or offset < 0 or offset > MAX_SQL_INTEGER:
        raise InvalidRequestError(
            f"offset must be an integer from 0 to {MAX_SQL_INTEGER}, got {_short(offset)}"
        )
    if sort_order not in ("asc", "desc"):
        raise InvalidRequestError(f"sort_order must be 'asc' or 'desc', got {sort_order!r}")
    if filter_logic not in ("and", "or"):
        raise InvalidRequestError(f"filter_logic must be 'and' or 'or', got {filter_logic!r}")
    if sort_by is not None and sort_by not in sortable:
        raise InvalidRequestError(
            f"cannot sort {what} by {sort_by!r}; allowed fields: {', '.join(sorted(sortable))}"
        )


def paginated(q: Query, items: list[Any], total: int) -> PaginatedResult[Any]:
    """What a ``_query_*`` hook returns: a page of ``q``'s results (``total``: all matches),
    built without re-validating the items (they are models already)."""
    return PaginatedResult.model_construct(items=items, limit=q.limit, offset=q.offset, total=total)


@dataclass(frozen=True, slots=True)
class SpanOutcome:
    """What happened to one span of a batch: ``stored``, ``duplicate`` or ``rejected`` + reason."""

    status: Literal["stored", "duplicate", "rejected"]
    span: SpanRow
    """The span as the store handled it (``span.to_span()`` is the model)."""
    reason: str | None = None


class AddSpansResult(Sequence[Span]):
    """The result of :meth:`LightningStore.add_many_spans`.

    As a sequence it holds the spans that were stored, as ``Span`` models (v0.3's return value;
    built when read: the OTLP intake only counts them); ``outcomes`` has one
    :class:`SpanOutcome` per input span, in input order, so that OTLP intake can report
    ``partial_success`` (``rejected`` and ``rejection_message``).
    """

    __slots__ = ("_outcomes", "stored", "then_result")

    def __init__(self, outcomes: list[SpanOutcome]) -> None:
        self._outcomes: list[SpanOutcome] | None = outcomes
        self.stored = [o.span for o in outcomes if o.status == "stored"]
        self.then_result: Any = None
        """What ``add_many_spans(then=...)`` returned (our stores)."""

    @classmethod
    def all_stored(cls, spans: list[SpanRow]) -> AddSpansResult:
        """Every span of the batch stored (the common batch): no outcome object per span is
        made unless :attr:`outcomes` is read (the OTLP intake only counts them)."""
        self = cls.__new__(cls)
        self._outcomes = None
        self.stored = spans
        self.then_result = None
        return self

    @property
    def outcomes(self) -> list[SpanOutcome]:
        if self._outcomes is None:
            self._outcomes = [SpanOutcome("stored", s) for s in self.stored]
        return self._outcomes

    def not_stored(self) -> list[SpanOutcome]:
        """The outcomes of the spans that were not stored (duplicates and rejections)."""
        if self._outcomes is None:
            return []
        return [o for o in self._outcomes if o.status != "stored"]

    def __len__(self) -> int:
        return len(self.stored)

    @overload
    def __getitem__(self, index: int) -> Span: ...
    @overload
    def __getitem__(self, index: slice) -> list[Span]: ...
    def __getitem__(self, index: int | slice) -> Span | list[Span]:
        if isinstance(index, slice):
            return [row.to_span() for row in self.stored[index]]
        return self.stored[index].to_span()

    def __iter__(self) -> Iterator[Span]:
        return (row.to_span() for row in self.stored)

    def __repr__(self) -> str:
        return (
            f"<AddSpansResult stored={len(self.stored)} duplicates={self.duplicate_count} "
            f"rejected={self.rejected_count}>"
        )

    @property
    def duplicate_count(self) -> int:
        return sum(1 for o in self.not_stored() if o.status == "duplicate")

    @property
    def rejected_count(self) -> int:
        return sum(1 for o in self.not_stored() if o.status == "rejected")

    @property
    def rejection_message(self) -> str | None:
        """A one-line summary of the distinct rejection reasons, or ``None`` if none."""
        reasons: dict[str, int] = {}
        for o in self.not_stored():
            if o.status == "rejected":
                reasons[o.reason or "rejected"] = reasons.get(o.reason or "rejected", 0) + 1
        if not reasons:
            return None
        return "; ".join(f"{r} ({n} span{'s' if n > 1 else ''})" for r, n in reasons.items())


@dataclass(frozen=True, slots=True)
class AttemptUpdate:
    """One item of :meth:`LightningStore.update_many_attempts`: the arguments of one
    ``update_attempt`` call (fields left :data:`UNSET` are not changed)."""

    rollout_id: str
    attempt_id: str
    status: AttemptStatus = UNSET
    worker_id: str = UNSET
    last_heartbeat_time: float = UNSET
    metadata: dict[str, Any] | None = UNSET

    def changes(self) -> dict[str, Any]:
        return given(
            status=self.status,
            worker_id=self.worker_id,
            last_heartbeat_time=self.last_heartbeat_time,
            metadata=self.metadata,
        )


class LightningStore(abc.ABC):
    """The control plane between algorithms and runners: rollouts, attempts, spans, resources.

    Every method is a coroutine and appears atomic to concurrent callers. Lifecycle: create, then
    ``await store.start()`` (opens the database, creates the schema, starts the health scanner)
    and ``await store.close()``; or ``async with store:``. Method semantics follow Agent
    Lightning v0.3 (see the protocol document); deviations are documented per method.

    The query methods (``query_*``) are written here once, concretely: v0.3's signature, the
    checks of their arguments and the :class:`~lightspan.store.api.query.Query` they become. A
    store implements only their hooks (``_query_rollouts(q)``, ...; see the end of the class):
    the core runs the query on its backend, the client sends it as REST parameters.
    """

    auto_register_rollouts: bool = True
    """Spans for unknown rollouts register them (our extension); ``False`` rejects such spans."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open resources and start the background health scanner. Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop the scanner and release resources. Idempotent."""

    async def __aenter__(self) -> LightningStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def scan_health(self) -> list[Attempt]:
        """Mark attempts that exceeded ``timeout_seconds`` / ``unresponsive_seconds`` now.

        The background scanner calls this every ``scan_interval`` seconds; tests call it directly.
        Returns the attempts whose status changed.
        """

    @abc.abstractmethod
    async def statistics(self) -> dict[str, Any]:
        """``{name, total_rollouts, total_attempts, total_spans, total_resources, total_workers,
        uptime}`` (v0.3's ``statistics``)."""

    async def get_statistics(self) -> dict[str, Any]:
        """Alias of :meth:`statistics`."""
        return await self.statistics()

    # ------------------------------------------------------------------ rollouts and queue

    @abc.abstractmethod
    async def start_rollout(
        self,
        input: Any,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
        worker_id: str | None = None,
    ) -> AttemptedRollout:
        """Register a rollout in ``preparing`` with its first attempt, bypassing the queue."""

    @abc.abstractmethod
    async def enqueue_rollout(
        self,
        input: Any,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Rollout:
        """Queue a rollout (``queuing``, FIFO). ``resources_id=None`` means the latest resources."""

    @abc.abstractmethod
    async def enqueue_many_rollouts(
        self, rollouts: Sequence[EnqueueRolloutRequest]
    ) -> Sequence[Rollout]:
        """Queue several rollouts atomically, in the given order."""

    @abc.abstractmethod
    async def dequeue_rollout(self, worker_id: str | None = None) -> AttemptedRollout | None:
        """Claim the oldest queued rollout (never handed to two callers), creating an attempt."""

    @abc.abstractmethod
    async def dequeue_many_rollouts(
        self, *, limit: int = 1, worker_id: str | None = None
    ) -> Sequence[AttemptedRollout]:
        """Claim up to ``limit`` queued rollouts in FIFO order (``limit <= 0``: none)."""

    @abc.abstractmethod
    async def start_attempt(
        self, rollout_id: str, worker_id: str | None = None
    ) -> AttemptedRollout:
        """Create a new attempt for an existing rollout (manual retry). Unknown: NotFoundError."""

    async def query_rollouts(
        self,
        *,
        status_in: Sequence[RolloutStatus] | None = None,
        rollout_id_in: Sequence[str] | None = None,
        rollout_id_contains: str | None = None,
        filter_logic: Literal["and", "or"] = "and",
        sort_by: str | None = None,
        sort_order: Literal["asc", "desc"] = "asc",
        limit: int = -1,
        offset: int = 0,
        status: Sequence[RolloutStatus] | None = None,
        rollout_ids: Sequence[str] | None = None,
    ) -> PaginatedResult[Rollout]:
        """Rollouts (as AttemptedRollout when attempted) matching the filters, one page.

        ``status``/``rollout_ids`` are v0.3's deprecated aliases of ``status_in``/``rollout_id_in``.
        Without ``sort_by`` the order is insertion order.
        """
        filters = {
            "status_in": status_in if status_in is not None else status,
            "rollout_id_in": rollout_id_in if rollout_id_in is not None else rollout_ids,
            "rollout_id_contains": rollout_id_contains,
        }
        q = self._query("rollouts", filters, filter_logic, sort_by, sort_order, limit, offset)
        return await self._query_rollouts(q)

    @abc.abstractmethod
    async def get_rollout_by_id(self, rollout_id: str) -> Rollout | None:
        """The rollout (AttemptedRollout with its latest attempt, if any) or ``None``."""

    @abc.abstractmethod
    async def update_rollout(
        self,
        rollout_id: str,
        input: Any = UNSET,
        mode: RolloutMode | None = UNSET,
        resources_id: str | None = UNSET,
        status: RolloutStatus = UNSET,
        config: RolloutConfig = UNSET,
        metadata: dict[str, Any] | None = UNSET,
    ) -> Rollout:
        """Replace the given fields (UNSET: unchanged). A terminal status sets ``end_time``;
        a queuing status puts the rollout back on the queue (once). ``None`` for ``status`` or
        ``config``: InvalidRequestError. Unknown rollout: NotFoundError."""

    @abc.abstractmethod
    async def wait_for_rollouts(
        self,
        *,
        rollout_ids: list[str],
        timeout: float | None = None,  # noqa: ASYNC109 - v0.3's signature
    ) -> list[Rollout]:
        """Wait until the rollouts finish (succeeded/failed/cancelled) or ``timeout`` seconds
        pass; return the finished ones, in the order asked. Unknown ids are left out."""

    # ------------------------------------------------------------------ attempts

    async def query_attempts(
        self,
        rollout_id: str,
        *,
        sort_by: str | None = "sequence_id",
        sort_order: Literal["asc", "desc"] = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Attempt]:
        """A rollout's attempts, oldest first by default."""
        must = {"rollout_id": rollout_id}
        q = self._query("attempts", {}, "and", sort_by, sort_order, limit, offset, must=must)
        return await self._query_attempts(q)

    @abc.abstractmethod
    async def get_latest_attempt(self, rollout_id: str) -> Attempt | None:
        """The attempt with the highest ``sequence_id``, or ``None``."""

    @abc.abstractmethod
    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str,
        status: AttemptStatus = UNSET,
        worker_id: str = UNSET,
        last_heartbeat_time: float = UNSET,
        metadata: dict[str, Any] | None = UNSET,
    ) -> Attempt:
        """Update an attempt (``attempt_id="latest"`` for the latest); the latest attempt's
        status moves the rollout (retry rules in :mod:`lightspan.store.core.lifecycle`) and the
        worker. ``None`` for any field: InvalidRequestError. Unknown: NotFoundError."""

    async def update_many_attempts(
        self, updates: Sequence[AttemptUpdate]
    ) -> list[Attempt | StoreError]:
        """Several ``update_attempt`` calls (a lightspan extension, not in Agent Lightning's
        API): one result per update, in order, the updated attempt or the update's own
        :class:`StoreError` (NotFound, invalid) -- one update's error loses no other. Other
        errors (a store that went away) raise. Updates of different rollouts run concurrently
        (a backend with group commit stores them in one transaction); updates that share a
        rollout run in the order given."""
        distinct = len({u.rollout_id for u in updates}) == len(updates)

        async def one(u: AttemptUpdate) -> Attempt | StoreError:
            try:
                return await self.update_attempt(u.rollout_id, u.attempt_id, **u.changes())
            except StoreError as e:
                return e

        if distinct:
            return list(await asyncio.gather(*(one(u) for u in updates)))
        return [await one(u) for u in updates]

    # ------------------------------------------------------------------ spans

    @abc.abstractmethod
    async def add_span(self, span: Span) -> Span | None:
        """Store one span; ``None`` if it is a duplicate. The span is a heartbeat and makes a
        preparing attempt/rollout ``running``. Unknown rollout with auto-registration off, or
        unknown attempt of a known rollout: NotFoundError."""

    @abc.abstractmethod
    async def add_many_spans(
        self, spans: Sequence[Span], *, assign_sequence_ids: Collection[int] = ()
    ) -> AddSpansResult:
        """Store a batch; each span is stored, a duplicate, or rejected (with a reason) on its
        own, and the batch is durable when this returns. See :class:`AddSpansResult`.

        ``assign_sequence_ids``: indices of spans that carry no sequence id of their own (e.g.
        OTLP spans without ``agentlightning.span_sequence_id``); the store issues theirs from
        the rollout's counter in the same transaction (one commit instead of two) and writes
        it into those span objects."""

    async def query_spans(
        self,
        rollout_id: str,
        attempt_id: str | None = None,
        *,
        trace_id: str | None = None,
        trace_id_contains: str | None = None,
        span_id: str | None = None,
        span_id_contains: str | None = None,
        parent_id: str | None = None,
        parent_id_contains: str | None = None,
        name: str | None = None,
        name_contains: str | None = None,
        filter_logic: Literal["and", "or"] = "and",
        limit: int = -1,
        offset: int = 0,
        sort_by: str | None = "sequence_id",
        sort_order: Literal["asc", "desc"] = "asc",
    ) -> PaginatedResult[Span]:
        """A rollout's spans (``attempt_id``: an id, ``"latest"`` or ``None`` for all attempts),
        filtered (``filter_logic`` combines the filters; rollout/attempt always apply)."""
        filters = {
            "trace_id": trace_id,
            "trace_id_contains": trace_id_contains,
            "span_id": span_id,
            "span_id_contains": span_id_contains,
            "parent_id": parent_id,
            "parent_id_contains": parent_id_contains,
            "name": name,
            "name_contains": name_contains,
        }
        must = {"rollout_id": rollout_id, "attempt_id": attempt_id}
        q = self._query(
            "spans", filters, filter_logic, sort_by, sort_order, limit, offset, must=must
        )
        return await self._query_spans(q)

    async def query_spans_json(
        self, rollout_id: str, attempt_id: str | None = None, **options: Any
    ) -> tuple[list[str], int]:
        """Like :meth:`query_spans` (the same keyword arguments) but the spans as JSON texts
        plus the total: a fast path for the server, which can send stored JSON without parsing
        it."""
        return await self._query_spans_json(self._span_query(rollout_id, attempt_id, options))

    async def query_spans_frames(
        self, rollout_id: str, attempt_id: str | None = None, **options: Any
    ) -> tuple[list[bytes], int, int]:
        """Like :meth:`query_spans_json` but as the frames of a compact page
        (``span_frames.py``), plus the page's span count and the total; the SQL backends hand
        over their stored compressed chunks."""
        return await self._query_spans_frames(self._span_query(rollout_id, attempt_id, options))

    def _span_query(
        self, rollout_id: str, attempt_id: str | None, options: dict[str, Any]
    ) -> Query:
        """The query of :meth:`query_spans`' keyword arguments ``options`` (left out: its
        defaults; unknown: InvalidRequestError). ``attempt_id="latest"`` stays in ``must`` as
        that value: the store resolves it in its read transaction, the client sends it on."""
        if not options.keys() <= _SPAN_OPTIONS.keys():
            unknown = ", ".join(sorted(options.keys() - _SPAN_OPTIONS.keys()))
            raise InvalidRequestError(f"unknown span filter(s): {unknown}")
        o = {**_SPAN_OPTIONS, **options}
        filters = {name: o[name] for name in _SPAN_FILTERS}
        must = {"rollout_id": rollout_id, "attempt_id": attempt_id}
        paging = o["filter_logic"], o["sort_by"], o["sort_order"], o["limit"], o["offset"]
        return self._query("spans", filters, *paging, must=must)

    @abc.abstractmethod
    async def get_next_span_sequence_id(self, rollout_id: str, attempt_id: str) -> int:
        """Issue the next span sequence id of the rollout (1, 2, ...; per rollout, not attempt)."""

    @abc.abstractmethod
    async def get_many_span_sequence_ids(
        self, rollout_attempt_ids: Sequence[tuple[str, str]]
    ) -> Sequence[int]:
        """Issue one sequence id per ``(rollout_id, attempt_id)`` pair, in order."""

    # ------------------------------------------------------------------ resources

    @abc.abstractmethod
    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate:
        """Store a new snapshot (new id, version 1); it becomes the latest."""

    @abc.abstractmethod
    async def update_resources(
        self, resources_id: str, resources: NamedResources
    ) -> ResourcesUpdate:
        """Replace a snapshot's resources and bump its version (creates it if unknown); it
        becomes the latest."""

    @abc.abstractmethod
    async def get_resources_by_id(self, resources_id: str) -> ResourcesUpdate | None: ...

    @abc.abstractmethod
    async def get_latest_resources(self) -> ResourcesUpdate | None:
        """The snapshot with the highest ``update_time`` (the last written on ties)."""

    async def query_resources(
        self,
        *,
        resources_id: str | None = None,
        resources_id_contains: str | None = None,
        sort_by: str | None = None,
        sort_order: Literal["asc", "desc"] = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[ResourcesUpdate]:
        filters = {"resources_id": resources_id, "resources_id_contains": resources_id_contains}
        q = self._query("resources", filters, "and", sort_by, sort_order, limit, offset)
        return await self._query_resources(q)

    # ------------------------------------------------------------------ workers

    async def query_workers(
        self,
        *,
        status_in: Sequence[WorkerStatus] | None = None,
        worker_id_contains: str | None = None,
        filter_logic: Literal["and", "or"] = "and",
        sort_by: str | None = None,
        sort_order: Literal["asc", "desc"] = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Worker]:
        filters = {"status_in": status_in, "worker_id_contains": worker_id_contains}
        q = self._query("workers", filters, filter_logic, sort_by, sort_order, limit, offset)
        return await self._query_workers(q)

    @abc.abstractmethod
    async def get_worker_by_id(self, worker_id: str) -> Worker | None: ...

    @abc.abstractmethod
    async def update_worker(
        self, worker_id: str, heartbeat_stats: dict[str, Any] = UNSET
    ) -> Worker:
        """Heartbeat: create the worker if new, stamp ``last_heartbeat_time``, keep the stats.
        ``heartbeat_stats=None``: InvalidRequestError."""

    # ------------------------------------------------------------------ query hooks

    def _query(
        self,
        what: Literal["rollouts", "attempts", "spans", "resources", "workers"],
        filters: dict[str, Any],
        filter_logic: Literal["and", "or"],
        sort_by: str | None,
        sort_order: Literal["asc", "desc"],
        limit: int,
        offset: int,
        *,
        must: dict[str, Any] | None = None,
    ) -> Query:
        """The :class:`Query` of a ``query_*`` call: ``filters`` and ``must`` by their REST
        names (``x``, ``x_in``, ``x_contains``; ``None``: no filter), checked by
        :meth:`_check_page`."""
        q = Query(
            must=conds_from_params(must) if must else [],
            conds=conds_from_params(filters),
            logic=filter_logic,
            sort_by=sort_by,
            sort_order=sort_order,
            limit=limit,
            offset=offset,
        )
        self._check_page(q, what)
        return q

    def _check_page(self, q: Query, what: str) -> None:
        """Refuse the paging, sorting and ``filter_logic`` v0.3 answers 400 to
        (:func:`validate_page`). The client overrides it: the server it talks to checks them,
        by its own rules (``agl store``'s are not ours)."""
        validate_page(
            limit=q.limit,
            offset=q.offset,
            sort_by=q.sort_by,
            sort_order=q.sort_order,
            sortable=_SORTABLE[what],
            what=what,
            filter_logic=q.logic,
        )

    @abc.abstractmethod
    async def _query_rollouts(self, q: Query) -> PaginatedResult[Rollout]:
        """:meth:`query_rollouts`' page (rollouts with their latest attempt as AttemptedRollout)."""

    @abc.abstractmethod
    async def _query_attempts(self, q: Query) -> PaginatedResult[Attempt]:
        """:meth:`query_attempts`' page (``q.must`` names the rollout)."""

    @abc.abstractmethod
    async def _query_spans(self, q: Query) -> PaginatedResult[Span]:
        """:meth:`query_spans`' page (``q.must``: the rollout, maybe the attempt or ``"latest"``,
        see :meth:`_span_query`)."""

    async def _query_spans_json(self, q: Query) -> tuple[list[str], int]:
        """:meth:`query_spans_json`'s texts and total. Stores that keep JSON override this; the
        default serialises :meth:`_query_spans`' page."""
        page = await self._query_spans(q)
        return [s.model_dump_json() for s in page.items], page.total

    async def _query_spans_frames(self, q: Query) -> tuple[list[bytes], int, int]:
        """:meth:`query_spans_frames`' frames, span count and total. The default compresses
        :meth:`_query_spans_json`'s texts (needs ``zstandard``)."""
        from lightspan.store.api.span_frames import compress_docs

        docs, total = await self._query_spans_json(q)
        return ([compress_docs(docs)] if docs else []), len(docs), total

    @abc.abstractmethod
    async def _query_resources(self, q: Query) -> PaginatedResult[ResourcesUpdate]:
        """:meth:`query_resources`' page."""

    @abc.abstractmethod
    async def _query_workers(self, q: Query) -> PaginatedResult[Worker]:
        """:meth:`query_workers`' page."""


_SORTABLE = {
    "rollouts": ROLLOUT_SORT_FIELDS,
    "attempts": ATTEMPT_SORT_FIELDS,
    "spans": SPAN_SORT_FIELDS,
    "resources": RESOURCES_SORT_FIELDS,
    "workers": WORKER_SORT_FIELDS,
}

_SPAN_OPTIONS: dict[str, Any] = dict(LightningStore.query_spans.__kwdefaults__ or {})
""":meth:`LightningStore.query_spans`' keyword arguments and their defaults, taken from its
signature so that ``query_spans_json``/``query_spans_frames`` (``**options``) accept exactly
those, with the same defaults."""

_SPAN_FILTERS = tuple(
    name
    for name in _SPAN_OPTIONS
    if name not in ("filter_logic", "sort_by", "sort_order", "limit", "offset")
)
"""The filters among them (the rest is the page)."""
