"""The LightningStore REST API under ``/v1/agl``, route for route Agent Lightning v0.3's.

Why hand-written Starlette routes and not FastAPI: the reference's status codes and body shapes
are the contract (see ``/work/shared/lightningstore-protocol.md``), and a thin layer over the
store keeps the hot paths (span queries served from stored JSON) free of per-item pydantic work.

Error mapping (a better server than the reference, which answers 500 to store errors):
unparseable JSON -> 400; a body or query that does not validate -> 422 (FastAPI's ``detail``
list); bad pagination or an explicit ``null`` where a value is required -> 400; an unknown
rollout/attempt -> 404 naming it; anything else -> 500 ``{"detail", "error_type"}``, which the
reference client retries.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from pydantic import AfterValidator, BaseModel, Field, TypeAdapter, ValidationError
from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lightspan.store.api import span_frames
from lightspan.store.api.base import (
    UNSET,
    AttemptUpdate,
    InvalidRequestError,
    LightningStore,
    NotFoundError,
    StoreError,
)
from lightspan.store.api.limits import (
    MAX_JSON_BODY_DEPTH,
    MAX_PAGE_LIMIT,
    BodyTooDeep,
    IntegerOutOfRange,
    check_nesting,
    loads_bounded,
)
from lightspan.store.api.models import (
    AttemptStatus,
    EnqueueRolloutRequest,
    NamedResources,
    RolloutConfig,
    RolloutMode,
    RolloutStatus,
    Span,
    WorkerStatus,
)
from lightspan.store.core.store import CoreStore
from lightspan.store.intake.convert import convert_async
from lightspan.store.intake.ingest import ingest
from lightspan.store.intake.otlp import OtlpDecodeError
from lightspan.store.intake.otlp_http import PayloadTooLarge, read_limited

__all__ = ["API_PREFIX", "rest_routes"]

API_PREFIX = "/v1/agl"
M = TypeVar("M", bound=BaseModel)
logger = logging.getLogger("lightspan.store.server.rest")


# --------------------------------------------------------------------------- request bodies


# A free-form JSON field: any value nested at most MAX_NESTING_DEPTH deep (else 422).
JsonValue = Annotated[Any, AfterValidator(check_nesting)]
JsonObject = Annotated[dict[str, Any], AfterValidator(check_nesting)]


class RolloutRequest(BaseModel):
    input: JsonValue = None
    mode: RolloutMode | None = None
    resources_id: str | None = None
    config: RolloutConfig | None = None
    metadata: JsonObject | None = None
    worker_id: str | None = None


class EnqueueManyRequest(BaseModel):
    rollouts: list[EnqueueRolloutRequest]


class DequeueRequest(BaseModel):
    limit: int = 1
    worker_id: str | None = None


class StartAttemptRequest(BaseModel):
    worker_id: str | None = None


class PageQuery(BaseModel):
    """The paging and sorting arguments of every query route, defined once.

    Each query model's fields are the keyword arguments of the store method its route calls
    (``LightningStore.query_*``): the route passes ``**_args(q)`` and the store checks them
    (``base.py``; bad paging is an InvalidRequestError, answered 400)."""

    limit: int = -1
    offset: int = 0
    sort_by: str | None = None
    sort_order: Literal["asc", "desc"] = "asc"


class FilteredPageQuery(PageQuery):
    """:class:`PageQuery` for routes with several filters (combined with ``and`` or ``or``)."""

    filter_logic: Literal["and", "or"] = "and"


class QueryRolloutsRequest(FilteredPageQuery):
    status_in: list[RolloutStatus] | None = None
    rollout_id_in: list[str] | None = None
    rollout_id_contains: str | None = None


class QueryAttemptsRequest(PageQuery):
    sort_by: str | None = "sequence_id"


class QueryResourcesRequest(PageQuery):
    resources_id: str | None = None
    resources_id_contains: str | None = None


class QueryWorkersRequest(FilteredPageQuery):
    status_in: list[WorkerStatus] | None = None
    worker_id_contains: str | None = None


class QuerySpansRequest(FilteredPageQuery):
    rollout_id: str
    attempt_id: str | None = None
    trace_id: str | None = None
    trace_id_contains: str | None = None
    span_id: str | None = None
    span_id_contains: str | None = None
    parent_id: str | None = None
    parent_id_contains: str | None = None
    name: str | None = None
    name_contains: str | None = None
    sort_by: str | None = "sequence_id"


class WaitRequest(BaseModel):
    rollout_ids: list[str]
    timeout: float | None = None


class NextSequenceIdRequest(BaseModel):
    rollout_id: str
    attempt_id: str


class UpdateRolloutRequest(BaseModel):
    input: JsonValue = None
    mode: RolloutMode | None = None
    resources_id: str | None = None
    status: RolloutStatus | None = None
    config: RolloutConfig | None = None
    metadata: JsonObject | None = None


class UpdateAttemptRequest(BaseModel):
    status: AttemptStatus | None = None
    worker_id: str | None = None
    last_heartbeat_time: float | None = None
    metadata: JsonObject | None = Field(default=None)


class UpdateAttemptItem(UpdateAttemptRequest):
    rollout_id: str
    attempt_id: str


class ExchangeDequeue(BaseModel):
    limit: int = 1
    worker_id: str | None = None


class ExchangeWorker(BaseModel):
    worker_id: str
    heartbeat_stats: JsonObject = Field(default_factory=dict)


class ExchangeRequest(BaseModel):
    """``POST /v1/agl/runner/exchange`` (a lightspan extension): see the route."""

    otlp: str | None = None
    workers: list[ExchangeWorker] = Field(default_factory=list)
    updates: list[UpdateAttemptItem] = Field(default_factory=list)
    dequeue: ExchangeDequeue | None = None


class UpdateWorkerRequest(BaseModel):
    heartbeat_stats: JsonObject | None = None


_RESOURCES = TypeAdapter(NamedResources)


# --------------------------------------------------------------------------- plumbing


class HttpError(Exception):
    """An error answer: status code plus a JSON body."""

    def __init__(self, status: int, detail: Any, error_type: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body: dict[str, Any] = {"detail": detail}
        if error_type:
            self.body["error_type"] = error_type


def _json(content: Any, status: int = 200) -> Response:
    return Response(to_json(content), status_code=status, media_type="application/json")


def _raw_json(text: str | bytes, status: int = 200) -> Response:
    return Response(text, status_code=status, media_type="application/json")


async def _body(request: Request, max_bytes: int) -> Any:
    """The JSON body, ``None`` if empty; 413 past ``max_bytes``; 400 if it is not JSON, nests
    deeper than ``MAX_JSON_BODY_DEPTH`` or carries an integer beyond 64 bits."""
    try:
        raw = await read_limited(request, max_bytes)
    except PayloadTooLarge as exc:
        raise HttpError(413, str(exc), "PayloadTooLarge") from exc
    if not raw.strip():
        return None
    try:
        return loads_bounded(raw, MAX_JSON_BODY_DEPTH, check_integers=True)
    except (BodyTooDeep, IntegerOutOfRange) as exc:
        raise HttpError(400, f"request body refused: {exc}", "MalformedBody") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"request body is not valid JSON: {exc}", "MalformedBody") from exc


def _validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return json.loads(exc.json(include_url=False))


def _validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HttpError(422, _validation_detail(exc)) from exc


async def _body_model(
    request: Request, model: type[M], max_bytes: int, *, optional: bool = False
) -> M:
    data = await _body(request, max_bytes)
    if data is None and optional:
        data = {}
    return _validate(model, data)


def _is_list_field(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return any(get_origin(a) is list for a in get_args(annotation))


def _query_model(request: Request, model: type[M]) -> M:
    """Build a query model from URL parameters (list fields repeat: ``status_in=a&status_in=b``)."""
    params = request.query_params
    data: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if _is_list_field(info.annotation):
            values = params.getlist(name)
            if values:
                data[name] = values
        elif name in params:
            data[name] = params[name]
    return _validate(model, data)


def _args(q: BaseModel) -> dict[str, Any]:
    """A query model's fields, as the keyword arguments of its store method (``vars``: the
    field values pydantic keeps; ``dict(q)`` iterates through pydantic, ~5 us a request)."""
    return vars(q)


def _required_or_unset(model: BaseModel, field: str) -> Any:
    """UNSET when omitted; 400 when explicitly ``null`` (the field cannot be cleared)."""
    if field not in model.model_fields_set:
        return UNSET
    value = getattr(model, field)
    if value is None:
        raise HttpError(400, f"{field} cannot be null; omit it to leave it unchanged", "NullField")
    return value


def _optional_or_unset(model: BaseModel, field: str) -> Any:
    return getattr(model, field) if field in model.model_fields_set else UNSET


Handler = Callable[[Request], Awaitable[Response]]


def _guard(fn: Handler) -> Handler:
    """Map store errors onto HTTP answers (see the module docstring)."""

    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except HttpError as exc:
            return _json(exc.body, exc.status)
        except NotFoundError as exc:
            return _json({"detail": str(exc), "error_type": "NotFoundError"}, 404)
        except (InvalidRequestError, StoreError, ValueError) as exc:
            return _json({"detail": str(exc), "error_type": type(exc).__name__}, 400)
        except Exception as exc:
            logger.exception("%s %s failed", request.method, request.url.path)
            detail = f"internal server error ({type(exc).__name__}); see the server log"
            return _json({"detail": detail, "error_type": type(exc).__name__}, 500)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _paginated_json(items_json: list[str], limit: int, offset: int, total: int) -> str:
    return (
        '{"items":['
        + ",".join(items_json)
        + f'],"limit":{limit},"offset":{offset},"total":{total}}}'
    )


# --------------------------------------------------------------------------- routes


class RestApi:
    """Agent Lightning v0.3's ``/v1/agl`` REST API (and our runner exchange) over one store:
    one handler method per route of :data:`ROUTES`; :func:`_guard` maps store errors onto
    HTTP answers."""

    def __init__(self, store: LightningStore, max_request_bytes: int) -> None:
        self.store = store
        self.max_request_bytes = max_request_bytes

    async def health(self, request: Request) -> Response:
        return _raw_json(b'{"status":"ok"}')

    async def enqueue(self, request: Request) -> Response:
        body = await _body_model(request, EnqueueManyRequest, self.max_request_bytes)
        if not body.rollouts:
            return _raw_json(b"[]", 201)
        rollouts = await self.store.enqueue_many_rollouts(body.rollouts)
        return _json(list(rollouts), 201)

    async def dequeue(self, request: Request) -> Response:
        body = await _body_model(request, DequeueRequest, self.max_request_bytes, optional=True)
        if body.limit > MAX_PAGE_LIMIT:
            raise HttpError(400, f"limit must be at most {MAX_PAGE_LIMIT}", "InvalidRequestError")
        if body.limit <= 0:
            return _raw_json(b"[]")
        rollouts = await self.store.dequeue_many_rollouts(
            limit=body.limit, worker_id=body.worker_id
        )
        return _json(list(rollouts))

    async def start_rollout(self, request: Request) -> Response:
        body = await _body_model(request, RolloutRequest, self.max_request_bytes)
        rollout = await self.store.start_rollout(
            input=body.input,
            mode=body.mode,
            resources_id=body.resources_id,
            config=body.config,
            metadata=body.metadata,
            worker_id=body.worker_id,
        )
        return _json(rollout, 201)

    async def _query_rollouts(self, q: QueryRolloutsRequest) -> Response:
        return _json(await self.store.query_rollouts(**_args(q)))

    async def query_rollouts(self, request: Request) -> Response:
        return await self._query_rollouts(_query_model(request, QueryRolloutsRequest))

    async def search_rollouts(self, request: Request) -> Response:
        return await self._query_rollouts(
            await _body_model(request, QueryRolloutsRequest, self.max_request_bytes, optional=True)
        )

    async def get_rollout(self, request: Request) -> Response:
        return _json(await self.store.get_rollout_by_id(request.path_params["rollout_id"]))

    async def update_rollout(self, request: Request) -> Response:
        body = await _body_model(
            request, UpdateRolloutRequest, self.max_request_bytes, optional=True
        )
        rollout = await self.store.update_rollout(
            request.path_params["rollout_id"],
            input=_optional_or_unset(body, "input"),
            mode=_optional_or_unset(body, "mode"),
            resources_id=_optional_or_unset(body, "resources_id"),
            status=_required_or_unset(body, "status"),
            config=_required_or_unset(body, "config"),
            metadata=_optional_or_unset(body, "metadata"),
        )
        return _json(rollout)

    async def start_attempt(self, request: Request) -> Response:
        body = await _body_model(
            request, StartAttemptRequest, self.max_request_bytes, optional=True
        )
        attempted = await self.store.start_attempt(
            request.path_params["rollout_id"], worker_id=body.worker_id
        )
        return _json(attempted, 201)

    async def _query_attempts(self, request: Request, q: QueryAttemptsRequest) -> Response:
        rollout_id = request.path_params["rollout_id"]
        return _json(await self.store.query_attempts(rollout_id, **_args(q)))

    async def query_attempts(self, request: Request) -> Response:
        return await self._query_attempts(request, _query_model(request, QueryAttemptsRequest))

    async def search_attempts(self, request: Request) -> Response:
        q = await _body_model(request, QueryAttemptsRequest, self.max_request_bytes, optional=True)
        return await self._query_attempts(request, q)

    async def latest_attempt(self, request: Request) -> Response:
        return _json(await self.store.get_latest_attempt(request.path_params["rollout_id"]))

    async def update_attempt(self, request: Request) -> Response:
        body = await _body_model(
            request, UpdateAttemptRequest, self.max_request_bytes, optional=True
        )
        attempt = await self.store.update_attempt(
            request.path_params["rollout_id"],
            request.path_params["attempt_id"],
            status=_required_or_unset(body, "status"),
            worker_id=_required_or_unset(body, "worker_id"),
            last_heartbeat_time=_required_or_unset(body, "last_heartbeat_time"),
            metadata=_required_or_unset(body, "metadata"),
        )
        return _json(attempt)

    async def runner_exchange(self, request: Request) -> Response:
        """A lightspan extension (not in Agent Lightning's API): what a runner's workers need
        from the store at one moment, in one request: its workers' heartbeats, spans of finished
        attempts, then their statuses, and a dequeue for the idle workers. ``{"otlp": base64
        of an OTLP ExportTraceServiceRequest (protobuf), "workers": [{"worker_id",
        "heartbeat_stats"}] (each as ``update_worker``), "updates": [{"rollout_id",
        "attempt_id", ...update_attempt's fields}], "dequeue": {"limit", "worker_id"}}``,
        every part optional
        -> ``{"spans": {"rejected", "message"}, "results": [{"attempt": {...}} | {"error":
        {"status", "error_type", "detail"}}], "rollouts": [AttemptedRollout]}``.

        One transaction: the spans, then the updates in order, then the dequeue, committed
        together or not at all, so a status never says finished without its attempt's spans
        (they become readable in the same commit). An update's own error (unknown attempt:
        404, invalid: 400) fails that item only (it is raised before the update writes
        anything); any other failure fails the whole request (500: nothing was applied, the
        client retries it; duplicate spans are ignored). A malformed body fails the whole
        request (400/422) before anything is stored. Served for lightspan's own stores."""
        body = await _body_model(request, ExchangeRequest, self.max_request_bytes)
        for part in ("updates", "workers"):
            if len(getattr(body, part)) > MAX_PAGE_LIMIT:
                raise HttpError(
                    400,
                    f"at most {MAX_PAGE_LIMIT} {part} per request",
                    "InvalidRequestError",
                )
        limit = body.dequeue.limit if body.dequeue is not None else 0
        if limit > MAX_PAGE_LIMIT:
            raise HttpError(400, f"limit must be at most {MAX_PAGE_LIMIT}", "InvalidRequestError")
        updates = [
            AttemptUpdate(
                u.rollout_id,
                u.attempt_id,
                status=_required_or_unset(u, "status"),
                worker_id=_required_or_unset(u, "worker_id"),
                last_heartbeat_time=_required_or_unset(u, "last_heartbeat_time"),
                metadata=_required_or_unset(u, "metadata"),
            )
            for u in body.updates
        ]
        writes = self.store.exchange_writes(  # type: ignore[attr-defined]
            updates,
            limit,
            body.dequeue.worker_id if body.dequeue is not None else None,
            workers={w.worker_id: w.heartbeat_stats for w in body.workers},
        )
        spans: dict[str, Any] = {"rejected": 0, "message": ""}
        if body.otlp:
            try:
                converted = await convert_async(base64.b64decode(body.otlp, validate=True))
            except (binascii.Error, ValueError, OtlpDecodeError) as exc:
                raise HttpError(
                    400, f"otlp: not a base64 OTLP request: {exc}", "MalformedBody"
                ) from None
            ingested = await ingest(self.store, converted, then=writes)
            spans = {"rejected": ingested.rejected, "message": ingested.message or ""}
            done, claimed = ingested.then_result
        else:
            done, claimed = (await self.store.add_many_spans([], then=writes)).then_result  # type: ignore[call-arg]
        results = []
        for r in done:
            if isinstance(r, StoreError):
                code = 404 if isinstance(r, NotFoundError) else 400
                error = {
                    "status": code,
                    "error_type": type(r).__name__,
                    "detail": str(r),
                }
                results.append({"error": error})
            else:
                results.append({"attempt": r})
        return _json({"spans": spans, "results": results, "rollouts": list(claimed)})

    async def _query_workers(self, q: QueryWorkersRequest) -> Response:
        return _json(await self.store.query_workers(**_args(q)))

    async def query_workers(self, request: Request) -> Response:
        return await self._query_workers(_query_model(request, QueryWorkersRequest))

    async def search_workers(self, request: Request) -> Response:
        return await self._query_workers(
            await _body_model(request, QueryWorkersRequest, self.max_request_bytes, optional=True)
        )

    async def get_worker(self, request: Request) -> Response:
        return _json(await self.store.get_worker_by_id(request.path_params["worker_id"]))

    async def update_worker(self, request: Request) -> Response:
        body = await _body_model(
            request, UpdateWorkerRequest, self.max_request_bytes, optional=True
        )
        worker = await self.store.update_worker(
            request.path_params["worker_id"],
            heartbeat_stats=_required_or_unset(body, "heartbeat_stats"),
        )
        return _json(worker)

    async def statistics(self, request: Request) -> Response:
        return _json(await self.store.statistics())

    async def query_resources(self, request: Request) -> Response:
        q = _query_model(request, QueryResourcesRequest)
        return _json(await self.store.query_resources(**_args(q)))

    async def _resources_body(self, request: Request) -> Any:
        data = await _body(request, self.max_request_bytes)
        try:
            return _RESOURCES.validate_python(data)
        except ValidationError as exc:
            raise HttpError(422, _validation_detail(exc)) from exc

    async def add_resources(self, request: Request) -> Response:
        return _json(await self.store.add_resources(await self._resources_body(request)), 201)

    async def latest_resources(self, request: Request) -> Response:
        return _json(await self.store.get_latest_resources())

    async def get_resources(self, request: Request) -> Response:
        return _json(await self.store.get_resources_by_id(request.path_params["resources_id"]))

    async def update_resources(self, request: Request) -> Response:
        resources = await self._resources_body(request)
        return _json(
            await self.store.update_resources(request.path_params["resources_id"], resources)
        )

    async def add_span(self, request: Request) -> Response:
        span = _validate(Span, await _body(request, self.max_request_bytes))
        return _json(await self.store.add_span(span), 201)

    async def _query_spans(self, q: QuerySpansRequest, accept: str) -> Response:
        if span_frames.wants_frames(accept):
            # Our client asked for the compact page (span_frames.py); others get JSON.
            frames, count, total = await self.store.query_spans_frames(**_args(q))
            body = span_frames.encode_frames(frames, count, q.limit, q.offset, total)
            return Response(body, media_type=span_frames.MEDIA_TYPE)
        texts, total = await self.store.query_spans_json(**_args(q))
        return _raw_json(_paginated_json(texts, q.limit, q.offset, total))

    async def query_spans(self, request: Request) -> Response:
        q = _query_model(request, QuerySpansRequest)
        return await self._query_spans(q, request.headers.get("accept", ""))

    async def search_spans(self, request: Request) -> Response:
        q = await _body_model(request, QuerySpansRequest, self.max_request_bytes)
        return await self._query_spans(q, request.headers.get("accept", ""))

    async def next_sequence_id(self, request: Request) -> Response:
        body = await _body_model(request, NextSequenceIdRequest, self.max_request_bytes)
        seq = await self.store.get_next_span_sequence_id(body.rollout_id, body.attempt_id)
        return _json({"sequence_id": seq})

    async def wait_rollouts(self, request: Request) -> Response:
        body = await _body_model(request, WaitRequest, self.max_request_bytes)
        if body.timeout is not None and body.timeout < 0:
            raise HttpError(400, f"timeout must be >= 0 or null, got {body.timeout}", "BadTimeout")
        return _json(
            await self.store.wait_for_rollouts(rollout_ids=body.rollout_ids, timeout=body.timeout)
        )


ROUTES: list[tuple[str, str, str]] = [
    ("/health", "health", "GET"),
    ("/queues/rollouts/enqueue", "enqueue", "POST"),
    ("/queues/rollouts/dequeue", "dequeue", "POST"),
    ("/rollouts", "start_rollout", "POST"),
    ("/rollouts", "query_rollouts", "GET"),
    ("/rollouts/search", "search_rollouts", "POST"),
    ("/rollouts/{rollout_id}", "get_rollout", "GET"),
    ("/rollouts/{rollout_id}", "update_rollout", "POST"),
    ("/rollouts/{rollout_id}/attempts", "start_attempt", "POST"),
    ("/rollouts/{rollout_id}/attempts", "query_attempts", "GET"),
    ("/rollouts/{rollout_id}/attempts/search", "search_attempts", "POST"),
    ("/rollouts/{rollout_id}/attempts/latest", "latest_attempt", "GET"),
    ("/rollouts/{rollout_id}/attempts/{attempt_id}", "update_attempt", "POST"),
    ("/runner/exchange", "runner_exchange", "POST"),
    ("/workers", "query_workers", "GET"),
    ("/workers/search", "search_workers", "POST"),
    ("/workers/{worker_id}", "get_worker", "GET"),
    ("/workers/{worker_id}", "update_worker", "POST"),
    ("/statistics", "statistics", "GET"),
    ("/resources", "query_resources", "GET"),
    ("/resources", "add_resources", "POST"),
    ("/resources/latest", "latest_resources", "GET"),
    ("/resources/{resources_id}", "get_resources", "GET"),
    ("/resources/{resources_id}", "update_resources", "POST"),
    ("/spans", "add_span", "POST"),
    ("/spans", "query_spans", "GET"),
    ("/spans/search", "search_spans", "POST"),
    ("/spans/next", "next_sequence_id", "POST"),
    ("/waits/rollouts", "wait_rollouts", "POST"),
    ("/runner/exchange", "runner_exchange", "POST"),
]
"""(path under ``/v1/agl``, :class:`RestApi` method, HTTP method); fixed paths before ids."""


def rest_routes(store: LightningStore, max_request_bytes: int) -> list[BaseRoute]:
    """All ``/v1/agl`` routes bound to ``store``; the runner exchange only for our stores (it
    needs their transactions)."""
    api = RestApi(store, max_request_bytes)
    return [
        Route(API_PREFIX + path, _guard(getattr(api, name)), methods=[method])
        for path, name, method in ROUTES
        if name != "runner_exchange" or isinstance(store, CoreStore)
    ]
