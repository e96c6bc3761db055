"""The query methods are written once (``base.py``); these tests hold the three places that
only map names to them to the same names: the client's REST parameters (``client._rest``), the
server's request models (``server/rest.py``) and the store methods' keyword arguments.

Why: the mapping is mechanical only while the names agree; a filter renamed or added in one
place and not the others would be dropped silently (a query answering more than asked).
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic import BaseModel

from lightspan.store.api.base import InvalidRequestError, LightningStore, paginated
from lightspan.store.api.client import _rest
from lightspan.store.api.query import Cond, Query, conds_from_params, param_name
from lightspan.store.backends.memory import InMemoryLightningStore
from lightspan.store.server import rest


class _Recording(InMemoryLightningStore):
    """Keeps the Query each hook receives instead of running it."""

    def __init__(self) -> None:
        super().__init__(scan_interval=0)
        self.seen: list[Query] = []

    async def _record(self, q: Query) -> Any:
        self.seen.append(q)
        return paginated(q, [], 0)

    _query_rollouts = _query_attempts = _query_spans = _record
    _query_resources = _query_workers = _record

    async def _query_spans_json(self, q: Query) -> tuple[list[str], int]:
        self.seen.append(q)
        return [], 0


# (store method, the REST model its route parses, a call with every filter set)
CASES: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
    (
        "query_rollouts",
        rest.QueryRolloutsRequest,
        {
            "status_in": ["running", "failed"],
            "rollout_id_in": ["ro-1", "ro-2"],
            "rollout_id_contains": "ro-",
            "filter_logic": "or",
            "sort_by": "start_time",
            "sort_order": "desc",
            "limit": 5,
            "offset": 2,
        },
    ),
    ("query_attempts", rest.QueryAttemptsRequest, {"sort_order": "desc", "limit": 3}),
    (
        "query_spans",
        rest.QuerySpansRequest,
        {
            "rollout_id": "ro-1",
            "attempt_id": "latest",
            "trace_id": "t",
            "trace_id_contains": "t1",
            "span_id": "s",
            "span_id_contains": "s1",
            "parent_id": "p",
            "parent_id_contains": "p1",
            "name": "n",
            "name_contains": "n1",
            "filter_logic": "or",
            "sort_by": "name",
            "sort_order": "desc",
            "limit": 7,
            "offset": 1,
        },
    ),
    (
        "query_resources",
        rest.QueryResourcesRequest,
        {"resources_id": "rs-1", "resources_id_contains": "rs", "sort_by": "version"},
    ),
    (
        "query_workers",
        rest.QueryWorkersRequest,
        {"status_in": ["idle"], "worker_id_contains": "w", "filter_logic": "or", "limit": 4},
    ),
]


def _keywords(method: str) -> set[str]:
    params = inspect.signature(getattr(LightningStore, method)).parameters
    return {n for n, p in params.items() if n != "self"} - {"status", "rollout_ids"}


@pytest.mark.parametrize(("method", "model", "call"), CASES, ids=[c[0] for c in CASES])
def test_rest_models_name_the_store_methods_arguments(
    method: str, model: type[BaseModel], call: dict[str, Any]
) -> None:
    # The route passes the model's fields as keyword arguments (attempts: rollout_id from the
    # path); v0.3's deprecated aliases status/rollout_ids are not REST fields.
    expected = _keywords(method) - ({"rollout_id"} if method == "query_attempts" else set())
    assert set(model.model_fields) == expected
    assert set(call) <= expected


@pytest.mark.parametrize(("method", "model", "call"), CASES, ids=[c[0] for c in CASES])
async def test_client_parameters_are_the_query_the_server_rebuilds(
    method: str, model: type[BaseModel], call: dict[str, Any]
) -> None:
    """A query sent by the client (its REST parameters) and parsed by the server's model gives
    the same Query again: no filter is lost or renamed on the way."""
    store = _Recording()
    args = ("ro-1",) if method == "query_attempts" else ()
    await getattr(store, method)(*args, **call)
    sent = store.seen[-1]
    params = _rest(sent)
    if method == "query_attempts":
        assert params.pop("rollout_id") == "ro-1"  # it goes into the path
    assert set(params) <= set(model.model_fields)
    parsed = model.model_validate(params)
    await getattr(store, method)(*args, **rest._args(parsed))
    assert store.seen[-1] == sent
    assert {param_name(c) for c in (*sent.must, *sent.conds)} >= set(call) - {
        "filter_logic",
        "sort_by",
        "sort_order",
        "limit",
        "offset",
    }


async def test_span_json_and_frames_take_query_spans_arguments() -> None:
    store = _Recording()
    await store.query_spans("ro-1", "at-1", name_contains="llm", limit=3)
    await store.query_spans_json("ro-1", "at-1", name_contains="llm", limit=3)
    assert store.seen[0] == store.seen[1]
    assert store.seen[0].sort_by == "sequence_id"  # query_spans' default, in both
    with pytest.raises(InvalidRequestError, match="unknown span filter.*bogus"):
        await store.query_spans_json("ro-1", bogus="x")


def test_filter_names_both_ways() -> None:
    params = {"status_in": ("a", "b"), "rollout_id_contains": "x", "name": "n", "trace_id": None}
    conds = conds_from_params(params)
    assert conds == [
        Cond("status", "within", ["a", "b"]),
        Cond("rollout_id", "contains", "x"),
        Cond("name", "exact", "n"),
    ]
    assert [param_name(c) for c in conds] == ["status_in", "rollout_id_contains", "name"]


async def test_client_leaves_paging_checks_to_the_server() -> None:
    """The client sends what it is given (``agl store`` has its own limits); stores refuse."""
    from lightspan.store.api.client import LightningStoreClient

    client = LightningStoreClient("http://127.0.0.1:9")
    client._check_page(Query(limit=0), "rollouts")  # no error: the server decides
    with pytest.raises(InvalidRequestError, match="limit"):
        await _Recording().query_rollouts(limit=0)
