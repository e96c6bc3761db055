"""``LightningStoreClient``: the LightningStore interface over the REST API of a store server.

Why a client that implements the same interface as the in-process stores: code written against
``LightningStore`` (the trainer, runners, tools) switches between ``store.type: in_memory`` and
``external`` by configuration alone (:func:`store_for_config`). It speaks the REST API of
Agent Lightning v0.3, so it also works against the reference ``agl store`` server.

Failure policy: requests time out (``timeout``); only transient failures are retried, with
exponential backoff: connection failures (the request never reached the server), HTTP 5xx
(except 501) and 408, and for reads also a dropped connection or read timeout (a POST that may
have been applied is not blindly repeated). Errors name the operation and the server address;
404 raises :class:`RemoteNotFoundError` (a :class:`~.base.NotFoundError`), 400/422 raise
:class:`RemoteInvalidRequestError` (an :class:`~.base.InvalidRequestError`), so callers handle
remote and local stores alike.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_json

from lightspan.loop_thread import LoopThread
from lightspan.store.api import span_frames
from lightspan.store.api.base import (
    UNSET,
    AddSpansResult,
    AttemptUpdate,
    InvalidRequestError,
    LightningStore,
    NotFoundError,
    SpanOutcome,
    StoreError,
    given,
)
from lightspan.store.api.lean_http import LeanPool
from lightspan.store.api.lean_http import usable as lean_http_usable
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
)
from lightspan.store.api.query import Query, param_name
from lightspan.store.api.span_page import decode_frames_page, decode_span_page
from lightspan.store.intake.span_row import SpanRow

__all__ = [
    "ExchangeResult",
    "LightningStoreClient",
    "RemoteInvalidRequestError",
    "RemoteNotFoundError",
    "StoreClientError",
    "StoreUnavailableError",
    "SyncLightningStoreClient",
    "store_for_config",
]

logger = logging.getLogger("lightspan.store.api.client")
_RESOURCES = TypeAdapter(NamedResources)


class _ExchangeSpans(BaseModel):
    rejected: int = 0
    message: str = ""


class _ExchangeAnswer(BaseModel):
    spans: _ExchangeSpans = _ExchangeSpans()
    results: list[dict[str, Any]] = []
    rollouts: list[AttemptedRollout] = []


_EXCHANGE = TypeAdapter(_ExchangeAnswer)


@dataclass(slots=True)
class ExchangeResult:
    """The answer of :meth:`LightningStoreClient.runner_exchange`."""

    rejected: int = 0
    """Spans of the request the store rejected (OTLP ``partial_success``)."""
    message: str = ""
    results: list[Attempt | StoreError] = field(default_factory=list)
    """One per update, in order: the updated attempt or that update's error."""
    rollouts: list[AttemptedRollout] = field(default_factory=list)


class StoreClientError(StoreError):
    """A store request failed; ``operation``, ``address`` and ``status`` say which and how."""

    def __init__(
        self, operation: str, address: str, detail: str, status: int | None = None
    ) -> None:
        where = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{operation} failed against the store at {address}: {where}{detail}")
        self.operation = operation
        self.address = address
        self.status = status
        self.detail = detail


class RemoteNotFoundError(StoreClientError, NotFoundError):
    """The server answered 404 (an unknown rollout, attempt, ...)."""


class RemoteInvalidRequestError(StoreClientError, InvalidRequestError):
    """The server refused the request as invalid (400 or 422)."""


class StoreUnavailableError(StoreClientError, ConnectionError):
    """The server could not be reached, or kept failing, after all retries."""


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):  # FastAPI/pydantic validation errors
            return "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                for e in detail
                if isinstance(e, dict)
            )
        return str(detail)
    return str(body)[:500]


def _rollout(item: Any) -> Rollout:
    if isinstance(item, dict) and item.get("attempt") is not None:
        return AttemptedRollout.model_validate(item)
    return Rollout.model_validate(item)


def _page(data: dict[str, Any], parse: Callable[[Any], Any]) -> PaginatedResult[Any]:
    return PaginatedResult(
        items=[parse(i) for i in data["items"]],
        limit=data["limit"],
        offset=data["offset"],
        total=data["total"],
    )


def _rest(q: Query) -> dict[str, Any]:
    """The REST parameters (query string or JSON body) of a query built by ``base.py``: its
    filters under the names the server's request models parse (:func:`.query.param_name`),
    the page, and ``sort_by``/``sort_order``/``filter_logic`` only when they are set (the
    server's defaults apply otherwise, as v0.3's client does)."""
    params: dict[str, Any] = {param_name(c): c.value for c in (*q.must, *q.conds)}
    params["limit"] = q.limit
    params["offset"] = q.offset
    if q.logic != "and":
        params["filter_logic"] = q.logic
    if q.sort_by is not None:
        params["sort_by"] = q.sort_by
        params["sort_order"] = q.sort_order
    return params


class LightningStoreClient(LightningStore):
    """Async client of a LightningStore server (ours or Agent Lightning v0.3's ``agl store``).

    ``address`` is the server root (``http://host:4747``); ``token`` is sent as a bearer token.
    One client may be used from several event loops (each gets its own connection pool).
    """

    def __init__(
        self,
        address: str = "http://localhost:4747",
        *,
        token: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.address = address.rstrip("/")
        self.api = self.address + "/v1/agl"
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._transport = transport
        self._clients: dict[int, httpx.AsyncClient] = {}
        self._lock = threading.Lock()
        self._lean: dict[int, LeanPool] | None = {} if lean_http_usable(self.address) else None
        self.lean_requests = 0
        """Requests sent by the lean path (:mod:`.lean_http`), not through httpx."""
        self._batch_spans_supported: bool | None = None
        self.exchange_supported: bool | None = None
        """Whether the server has our ``/runner/exchange`` extension (None: not tried yet)."""
        self.compact_span_pages = True
        """Ask span queries for lightspan's compact page (``span_frames.py``) when
        ``zstandard`` is installed; ``False``: always JSON (what Agent Lightning's client
        gets)."""

    def __repr__(self) -> str:  # never shows the token
        return f"LightningStoreClient({self.address!r})"

    def otlp_traces_endpoint(self) -> str:
        """The server's OTLP/HTTP traces endpoint (as v0.3's client offers)."""
        return self.address + "/v1/traces"

    # ------------------------------------------------------------------ transport

    def _client(self) -> httpx.AsyncClient:
        key = id(asyncio.get_running_loop())
        with self._lock:
            client = self._clients.get(key)
            if client is None or client.is_closed:
                client = httpx.AsyncClient(
                    headers=self._headers,
                    timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                    transport=self._transport,
                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                )
                self._clients[key] = client
        return client

    async def start(self) -> None:
        """Nothing to open eagerly: connections are made on first use."""

    def _lean_pool(self) -> LeanPool | None:
        if self._lean is None:
            return None
        key = id(asyncio.get_running_loop())
        with self._lock:
            pool = self._lean.get(key)
            if pool is None:
                pool = self._lean[key] = LeanPool(self.address, self._headers)
        return pool

    async def close(self) -> None:
        """Close the connection pools (of every loop that used this client)."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
            lean = list(self._lean.values()) if self._lean is not None else []
            if self._lean is not None:
                self._lean.clear()
        for pool in lean:
            with contextlib.suppress(RuntimeError):
                await pool.aclose()
        for client in clients:
            with contextlib.suppress(RuntimeError):
                await client.aclose()

    def _delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + random.random() / 2)

    async def _request(
        self,
        operation: str,
        method: Literal["GET", "POST"],
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Any = None,
        http_timeout: float | None = None,
        allow_statuses: tuple[int, ...] = (),
        raw: bool | Literal["response"] = False,
        headers: dict[str, str] | None = None,
        lean: bool = False,
    ) -> Any:
        """One API call with the retry policy of the module docstring; returns decoded JSON
        (``raw``: the response body as bytes, for the caller to decode; ``"response"``: the
        successful ``httpx.Response`` itself). ``lean``: a POST of ``content`` through
        :mod:`.lean_http` where it applies (plain HTTP, no proxy)."""
        url = self.api + path
        pool = self._lean_pool() if lean and content is not None else None
        client = self._client() if pool is None else None
        kwargs: dict[str, Any] = {"params": params}
        if json is not None:
            kwargs["json"] = json
        if content is not None:
            kwargs["content"] = content
            headers = {"Content-Type": "application/json", **(headers or {})}
        if headers:
            kwargs["headers"] = headers
        if http_timeout is not None:
            kwargs["timeout"] = httpx.Timeout(http_timeout, connect=self.connect_timeout)
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt - 1))
            try:
                if pool is not None:
                    self.lean_requests += 1
                    response = await pool.post(
                        url[len(self.address) :],
                        content,  # type: ignore[arg-type]
                        read_timeout=http_timeout or self.timeout,
                        connect_timeout=self.connect_timeout,
                    )
                else:
                    assert client is not None
                    response = await client.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = f"cannot connect ({type(exc).__name__}: {exc})"
                continue
            except (httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError) as exc:
                last = f"connection lost ({type(exc).__name__}: {exc})"
                if method == "GET":
                    continue
                raise StoreUnavailableError(operation, self.address, last) from exc
            except httpx.TransportError as exc:
                raise StoreUnavailableError(
                    operation, self.address, f"{type(exc).__name__}: {exc}"
                ) from exc
            status = response.status_code
            if status < 400 or status in allow_statuses:
                if status in allow_statuses:
                    return response
                if raw == "response":
                    return response
                if raw:
                    return response.content
                return response.json() if response.content else None
            detail = _detail(response)
            if status == 408 or (status >= 500 and status != 501):
                last = f"HTTP {status}: {detail}"
                logger.info("%s: %s from %s, retrying", operation, last, self.address)
                continue
            if status == 404:
                raise RemoteNotFoundError(operation, self.address, detail, status)
            if status in (400, 422):
                raise RemoteInvalidRequestError(operation, self.address, detail, status)
            raise StoreClientError(operation, self.address, detail, status)
        raise StoreUnavailableError(
            operation, self.address, f"{last} (after {self.retries + 1} attempts)"
        )

    async def export_otlp(self, body: bytes) -> tuple[int, str]:
        """POST an OTLP/HTTP ``ExportTraceServiceRequest`` (protobuf) to the server's
        ``/v1/traces``; returns ``(rejected_spans, error_message)`` from ``partial_success``.

        One request for a whole batch (the REST API has no batch route). Retried like reads,
        also after a lost connection: the store ignores duplicate spans, so a replay is safe.
        """
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        url = self.otlp_traces_endpoint()
        headers = {"Content-Type": "application/x-protobuf"}
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt - 1))
            try:
                response = await self._client().post(url, content=body, headers=headers)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            status = response.status_code
            if status == 200:
                reply = ExportTraceServiceResponse()
                if response.content:
                    try:
                        reply.ParseFromString(response.content)
                    except Exception:  # a non-protobuf 200 body: nothing rejected that we know of
                        return 0, ""
                ps = reply.partial_success
                return int(ps.rejected_spans), ps.error_message
            if status == 408 or (status >= 500 and status != 501):
                last = f"HTTP {status}: {_detail(response)}"
                continue
            detail = _detail(response)
            if status == 404:
                raise RemoteNotFoundError("export_otlp", self.address, detail, status)
            if status in (400, 413, 415, 422):
                raise RemoteInvalidRequestError("export_otlp", self.address, detail, status)
            raise StoreClientError("export_otlp", self.address, detail, status)
        raise StoreUnavailableError(
            "export_otlp", self.address, f"{last} (after {self.retries + 1} attempts)"
        )

    # ------------------------------------------------------------------ misc

    def _check_page(self, q: Query, what: str) -> None:
        """Nothing checked here: the server does, by its own rules (ours or ``agl store``'s)."""

    async def scan_health(self) -> list[Attempt]:
        """The server's own scanner does this; a client has nothing to scan."""
        return []

    async def statistics(self) -> dict[str, Any]:
        return await self._request("statistics", "GET", "/statistics")

    async def health(self) -> bool:
        """Whether the server answers its health check (no retries)."""
        try:
            response = await self._client().get(self.api + "/health", timeout=self.connect_timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # ------------------------------------------------------------------ rollouts and queue

    async def start_rollout(
        self,
        input: Any,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
        worker_id: str | None = None,
    ) -> AttemptedRollout:
        body = {
            "input": input,
            "mode": mode,
            "resources_id": resources_id,
            "config": config.model_dump(mode="json") if config is not None else None,
            "metadata": metadata,
            "worker_id": worker_id,
        }
        data = await self._request("start_rollout", "POST", "/rollouts", json=body)
        return AttemptedRollout.model_validate(data)

    async def enqueue_rollout(
        self,
        input: Any,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Rollout:
        request = EnqueueRolloutRequest(
            input=input, mode=mode, resources_id=resources_id, config=config, metadata=metadata
        )
        rollouts = await self._enqueue("enqueue_rollout", [request])
        if not rollouts:
            raise StoreClientError("enqueue_rollout", self.address, "server returned no rollout")
        return rollouts[0]

    async def _enqueue(self, op: str, requests: Sequence[EnqueueRolloutRequest]) -> list[Rollout]:
        body = {"rollouts": [r.model_dump(mode="json") for r in requests]}
        data = await self._request(op, "POST", "/queues/rollouts/enqueue", json=body)
        return [Rollout.model_validate(item) for item in data]

    async def enqueue_many_rollouts(
        self, rollouts: Sequence[EnqueueRolloutRequest]
    ) -> Sequence[Rollout]:
        if not rollouts:
            return []
        return await self._enqueue("enqueue_many_rollouts", rollouts)

    async def dequeue_rollout(self, worker_id: str | None = None) -> AttemptedRollout | None:
        got = await self.dequeue_many_rollouts(limit=1, worker_id=worker_id)
        return got[0] if got else None

    async def dequeue_many_rollouts(
        self, *, limit: int = 1, worker_id: str | None = None
    ) -> Sequence[AttemptedRollout]:
        if limit <= 0:
            return []
        body: dict[str, Any] = {"limit": limit}
        if worker_id is not None:
            body["worker_id"] = worker_id
        data = await self._request(
            "dequeue_rollouts", "POST", "/queues/rollouts/dequeue", json=body
        )
        return [AttemptedRollout.model_validate(item) for item in data or []]

    async def start_attempt(
        self, rollout_id: str, worker_id: str | None = None
    ) -> AttemptedRollout:
        body = {"worker_id": worker_id} if worker_id is not None else None
        data = await self._request(
            f"start_attempt({rollout_id})", "POST", f"/rollouts/{rollout_id}/attempts", json=body
        )
        return AttemptedRollout.model_validate(data)

    async def _query_rollouts(self, q: Query) -> PaginatedResult[Rollout]:
        data = await self._request("query_rollouts", "POST", "/rollouts/search", json=_rest(q))
        return _page(data, _rollout)

    async def get_rollout_by_id(self, rollout_id: str) -> Rollout | None:
        data = await self._request(
            f"get_rollout_by_id({rollout_id})", "GET", f"/rollouts/{rollout_id}"
        )
        return _rollout(data) if data is not None else None

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
        body = given(
            input=input, mode=mode, resources_id=resources_id, status=status, metadata=metadata
        )
        if config is not UNSET:
            body["config"] = (
                config.model_dump(mode="json") if isinstance(config, RolloutConfig) else config
            )
        data = await self._request(
            f"update_rollout({rollout_id})", "POST", f"/rollouts/{rollout_id}", json=body
        )
        return _rollout(data)

    async def wait_for_rollouts(
        self,
        *,
        rollout_ids: list[str],
        timeout: float | None = None,  # noqa: ASYNC109 - the interface's name
    ) -> list[Rollout]:
        """Server-side wait (long poll): the HTTP timeout is stretched by ``timeout``."""
        data = await self._request(
            "wait_for_rollouts",
            "POST",
            "/waits/rollouts",
            json={"rollout_ids": list(rollout_ids), "timeout": timeout},
            http_timeout=24 * 3600.0 if timeout is None else timeout + self.timeout,
        )
        return [_rollout(item) for item in data]

    # ------------------------------------------------------------------ attempts

    async def _query_attempts(self, q: Query) -> PaginatedResult[Attempt]:
        body = _rest(q)
        rollout_id = body.pop("rollout_id")
        data = await self._request(
            f"query_attempts({rollout_id})",
            "POST",
            f"/rollouts/{rollout_id}/attempts/search",
            json=body,
        )
        return _page(data, Attempt.model_validate)

    async def get_latest_attempt(self, rollout_id: str) -> Attempt | None:
        data = await self._request(
            f"get_latest_attempt({rollout_id})", "GET", f"/rollouts/{rollout_id}/attempts/latest"
        )
        return Attempt.model_validate(data) if data is not None else None

    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str,
        status: AttemptStatus = UNSET,
        worker_id: str = UNSET,
        last_heartbeat_time: float = UNSET,
        metadata: dict[str, Any] | None = UNSET,
    ) -> Attempt:
        body = given(
            status=status,
            worker_id=worker_id,
            last_heartbeat_time=last_heartbeat_time,
            metadata=metadata,
        )
        data = await self._request(
            f"update_attempt({rollout_id}, {attempt_id})",
            "POST",
            f"/rollouts/{rollout_id}/attempts/{attempt_id}",
            json=body,
        )
        return Attempt.model_validate(data)

    async def update_many_attempts(
        self, updates: Sequence[AttemptUpdate]
    ) -> list[Attempt | StoreError]:
        """One ``POST /runner/exchange`` (our server's extension) for all updates; against a
        server without it (``agl store``) the per-attempt calls of the v0.3 API, concurrently."""
        if not updates:
            return []
        result = await self.runner_exchange(updates=updates)
        if result is not None:
            return result.results
        return await super().update_many_attempts(updates)

    async def runner_exchange(
        self,
        *,
        otlp: bytes | None = None,
        updates: Sequence[AttemptUpdate] = (),
        dequeue: int = 0,
        worker_id: str | None = None,
        workers: Mapping[str, dict[str, Any]] | None = None,
    ) -> ExchangeResult | None:
        """Our server's ``POST /runner/exchange`` extension: record ``workers``' heartbeats
        (worker id -> heartbeat stats, as ``update_worker``), store ``otlp`` (an OTLP
        ``ExportTraceServiceRequest``, protobuf), then apply ``updates`` and claim up to
        ``dequeue`` rollouts for ``worker_id``, in one request (the route's docstring has the
        order and failure rules). ``None`` if the server lacks the extension (``agl store``:
        404/405; remembered in :attr:`exchange_supported`): use the v0.3 calls instead.

        Raises for the request as a whole (unreachable store, 5xx after retries: nothing was
        applied, the server stores it all in one transaction; 400/422: malformed). A
        connection lost mid-request is not retried here, as for any POST (rollouts it claimed
        would be claimed twice); the runner retries its reports (duplicate spans are ignored,
        a status set again changes nothing)."""
        if self.exchange_supported is False:
            return None
        body: dict[str, Any] = {}
        if otlp:
            body["otlp"] = base64.b64encode(otlp).decode("ascii")
        if workers:
            body["workers"] = [
                {"worker_id": w, "heartbeat_stats": stats} for w, stats in workers.items()
            ]
        if updates:
            body["updates"] = [
                {"rollout_id": u.rollout_id, "attempt_id": u.attempt_id, **u.changes()}
                for u in updates
            ]
        if dequeue > 0:
            body["dequeue"] = {"limit": dequeue, "worker_id": worker_id}
        response = await self._request(
            "runner_exchange",
            "POST",
            "/runner/exchange",
            content=to_json(body),
            allow_statuses=(404, 405),
            raw=True,
            lean=True,
        )
        if not isinstance(response, bytes):  # the 404/405 answer itself
            self.exchange_supported = False
            return None
        self.exchange_supported = True
        try:
            data = _EXCHANGE.validate_json(response)
        except ValidationError as e:
            raise StoreClientError(
                "runner_exchange", self.address, f"malformed answer: {e}"
            ) from None
        results = [self._update_result(u, r) for u, r in zip(updates, data.results, strict=True)]
        return ExchangeResult(
            rejected=data.spans.rejected,
            message=data.spans.message,
            results=results,
            rollouts=data.rollouts,
        )

    def _update_result(self, u: AttemptUpdate, item: dict[str, Any]) -> Attempt | StoreError:
        error = item.get("error")
        if error is None:
            return Attempt.model_validate(item["attempt"])
        op = f"update_attempt({u.rollout_id}, {u.attempt_id})"
        code, detail = int(error.get("status") or 400), str(error.get("detail", ""))
        if code == 404:
            return RemoteNotFoundError(op, self.address, detail, code)
        if code in (400, 422):
            return RemoteInvalidRequestError(op, self.address, detail, code)
        return StoreUnavailableError(op, self.address, detail, code)

    # ------------------------------------------------------------------ spans

    async def add_span(self, span: Span) -> Span | None:
        data = await self._request(
            f"add_span({span.rollout_id}, {span.span_id})",
            "POST",
            "/spans",
            json=span.model_dump(mode="json"),
        )
        return Span.model_validate(data) if data is not None else None

    async def add_many_spans(
        self, spans: Sequence[Span], *, assign_sequence_ids: Collection[int] = ()
    ) -> AddSpansResult:
        """One span per request, as v0.3's REST API has no batch route; each span's outcome is
        reported on its own (use OTLP for bulk ingestion). ``assign_sequence_ids``: those spans
        get the rollout's next ids first (``POST /spans/next``, as v0.3's own clients do; an
        unknown rollout's span keeps 0 and is then rejected with the server's reason)."""
        for i in sorted(set(assign_sequence_ids)):
            span = spans[i]
            try:
                span.sequence_id = await self.get_next_span_sequence_id(
                    span.rollout_id, span.attempt_id
                )
            except RemoteNotFoundError:
                span.sequence_id = 0
        outcomes: list[SpanOutcome] = []
        for span in spans:
            try:
                stored = await self.add_span(span)
            except (RemoteNotFoundError, RemoteInvalidRequestError) as exc:
                outcomes.append(SpanOutcome("rejected", SpanRow.from_span(span), exc.detail))
                continue
            status = "stored" if stored is not None else "duplicate"
            outcomes.append(SpanOutcome(status, SpanRow.from_span(stored or span)))
        return AddSpansResult(outcomes)

    async def _query_spans(self, q: Query) -> PaginatedResult[Span]:
        body = _rest(q)
        operation = f"query_spans({body['rollout_id']})"
        # Ask for the compact page (span_frames.py); servers without it answer JSON.
        headers = {"Accept": f"{span_frames.MEDIA_TYPE}, application/json;q=0.9"}
        response = await self._request(
            operation,
            "POST",
            "/spans/search",
            json=body,
            headers=headers if self.compact_span_pages and span_frames.available() else None,
            raw="response",
        )
        compact = response.headers.get("content-type", "").startswith(span_frames.MEDIA_TYPE)
        try:
            if compact:
                return decode_frames_page(response.content)
            return decode_span_page(response.content)
        except ValueError as e:  # pydantic's ValidationError included
            raise StoreClientError(
                operation, self.address, f"malformed span page in the response: {e}"
            ) from None

    async def get_next_span_sequence_id(self, rollout_id: str, attempt_id: str) -> int:
        data = await self._request(
            f"get_next_span_sequence_id({rollout_id})",
            "POST",
            "/spans/next",
            json={"rollout_id": rollout_id, "attempt_id": attempt_id},
        )
        return int(data["sequence_id"])

    async def get_many_span_sequence_ids(
        self, rollout_attempt_ids: Sequence[tuple[str, str]]
    ) -> Sequence[int]:
        return [await self.get_next_span_sequence_id(r, a) for r, a in rollout_attempt_ids]

    # ------------------------------------------------------------------ resources

    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate:
        data = await self._request(
            "add_resources",
            "POST",
            "/resources",
            json=_RESOURCES.dump_python(resources, mode="json"),
        )
        return ResourcesUpdate.model_validate(data)

    async def update_resources(
        self, resources_id: str, resources: NamedResources
    ) -> ResourcesUpdate:
        data = await self._request(
            f"update_resources({resources_id})",
            "POST",
            f"/resources/{resources_id}",
            json=_RESOURCES.dump_python(resources, mode="json"),
        )
        return ResourcesUpdate.model_validate(data)

    async def get_resources_by_id(self, resources_id: str) -> ResourcesUpdate | None:
        data = await self._request(
            f"get_resources_by_id({resources_id})", "GET", f"/resources/{resources_id}"
        )
        return ResourcesUpdate.model_validate(data) if data is not None else None

    async def get_latest_resources(self) -> ResourcesUpdate | None:
        data = await self._request("get_latest_resources", "GET", "/resources/latest")
        return ResourcesUpdate.model_validate(data) if data is not None else None

    async def _query_resources(self, q: Query) -> PaginatedResult[ResourcesUpdate]:
        data = await self._request("query_resources", "GET", "/resources", params=_rest(q))
        return _page(data, ResourcesUpdate.model_validate)

    # ------------------------------------------------------------------ workers

    async def _query_workers(self, q: Query) -> PaginatedResult[Worker]:
        data = await self._request("query_workers", "POST", "/workers/search", json=_rest(q))
        return _page(data, Worker.model_validate)

    async def get_worker_by_id(self, worker_id: str) -> Worker | None:
        data = await self._request(f"get_worker_by_id({worker_id})", "GET", f"/workers/{worker_id}")
        return Worker.model_validate(data) if data is not None else None

    async def update_worker(
        self, worker_id: str, heartbeat_stats: dict[str, Any] = UNSET
    ) -> Worker:
        body = {"heartbeat_stats": heartbeat_stats} if heartbeat_stats is not UNSET else None
        data = await self._request(
            f"update_worker({worker_id})", "POST", f"/workers/{worker_id}", json=body
        )
        return Worker.model_validate(data)


class SyncLightningStoreClient:
    """Blocking facade: every :class:`LightningStoreClient` coroutine method as a plain call.

    Runs a private event loop in a daemon thread, so it works from code that has no loop and
    from inside a running loop's thread alike (the call blocks that thread).
    """

    def __init__(self, address: str = "http://localhost:4747", **options: Any) -> None:
        self.client = LightningStoreClient(address, **options)
        self._loop = LoopThread("lightspan-store-client")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.call(lambda: attr(*args, **kwargs))

        call.__name__ = name
        call.__doc__ = attr.__doc__
        return call

    def close(self) -> None:
        """Close connections and stop the loop thread. Idempotent."""
        if self._loop.loop.is_closed():
            return
        self._loop.call(self.client.close)
        self._loop.close()

    def __enter__(self) -> SyncLightningStoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def store_for_config(config: Any) -> LightningStore:
    """The store named by the configuration: in-process for ``in_memory``, else this client.

    ``config`` is a ``LightspanConfig`` or its ``StoreConfig``.
    """
    store_cfg = getattr(getattr(config, "agentLightning", None), "store", None) or config
    kind = getattr(store_cfg.type, "value", store_cfg.type)
    if kind == "in_memory":
        from lightspan.store.backends.factory import create_store

        return create_store("memory")
    return LightningStoreClient(
        store_cfg.address, token=store_cfg.token, timeout=store_cfg.timeout_seconds
    )
