"""ONE conformance suite for every LightningStore backend: memory, SQLite and PostgreSQL.

Why one suite: the backends must behave identically (Agent Lightning v0.3 semantics plus our
auto-registration), and the only convincing proof is the same assertions passing on each.
PostgreSQL runs against a private server started by tests/fixtures/postgres.py; if PostgreSQL is
not installed these tests fail rather than skip.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from lightspan.store import (
    LLM,
    EnqueueRolloutRequest,
    InvalidRequestError,
    LightningStore,
    NotFoundError,
    PromptTemplate,
    RolloutConfig,
    Span,
)
from lightspan.store.backends.factory import create_store
from lightspan.store.core import lifecycle as lc
from lightspan.store.core.store import DEFAULT_AUTO_ROLLOUT_TIMEOUT

BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
]

MakeStore = Callable[..., Awaitable[LightningStore]]


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[MakeStore]:
    """A factory of started stores of one backend, all sharing one database; closed at the end."""
    backend = request.param
    opened: list[LightningStore] = []
    location: dict[str, Any] = {}
    if backend == "sqlite":
        location["path"] = str(tmp_path / "store.db")
    elif backend == "postgres":
        location["dsn"] = request.getfixturevalue("postgres_db_dsn")

    async def make(**options: Any) -> LightningStore:
        options.setdefault("scan_interval", 0)
        store = create_store(backend, **location, **options)
        await store.start()
        opened.append(store)
        return store

    make.backend = backend  # type: ignore[attr-defined]
    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> LightningStore:
    return await make_store()


def span(
    rollout_id: str,
    attempt_id: str,
    seq: int,
    name: str = "step",
    *,
    span_id: str | None = None,
    trace_id: str | None = None,
    parent_id: str | None = "f" * 16,
    status_code: str = "UNSET",
    end_time: float | None = 2.0,
    **extra: Any,
) -> Span:
    s = Span.build(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        sequence_id=seq,
        name=name,
        span_id=span_id,
        trace_id=trace_id,
        parent_id=parent_id,
        start_time=1.0,
        end_time=end_time,
        status_code=status_code,  # type: ignore[arg-type]
        attributes={"i": seq},
    )
    return Span.model_validate({**s.model_dump(), **extra})


# ----------------------------------------------------------------------------- wire format


async def test_rollout_json_matches_agent_lightning(store: LightningStore) -> None:
    r = await store.enqueue_rollout({"q": "2+2"}, mode="train", metadata={"k": 1})
    data = json.loads(r.model_dump_json())
    assert set(data) == {
        "rollout_id",
        "input",
        "start_time",
        "end_time",
        "mode",
        "resources_id",
        "status",
        "config",
        "metadata",
    }
    assert data["status"] == "queuing" and isinstance(data["start_time"], float)
    assert data["config"] == {
        "timeout_seconds": None,
        "unresponsive_seconds": None,
        "max_attempts": 1,
        "retry_condition": [],
    }
    assert r.rollout_id.startswith("ro-") and len(r.rollout_id) == 15
    got = await store.dequeue_rollout()
    assert got is not None
    att = json.loads(got.attempt.model_dump_json())
    assert set(att) == {
        "rollout_id",
        "attempt_id",
        "sequence_id",
        "start_time",
        "end_time",
        "status",
        "worker_id",
        "last_heartbeat_time",
        "metadata",
    }
    assert got.attempt.attempt_id.startswith("at-") and len(got.attempt.attempt_id) == 11


async def test_span_extra_fields_round_trip(store: LightningStore) -> None:
    ar = await store.start_rollout(None)
    s = span(ar.rollout_id, ar.attempt.attempt_id, 1, custom_field={"a": [1, 2]})
    await store.add_span(s)
    got = (await store.query_spans(ar.rollout_id)).items[0]
    assert got.model_dump() == s.model_dump()
    assert got.model_extra == {"custom_field": {"a": [1, 2]}}
    texts, total = await store.query_spans_json(ar.rollout_id)
    assert total == 1 and json.loads(texts[0]) == json.loads(s.model_dump_json())


# ----------------------------------------------------------------------------- queue


async def test_queue_is_fifo_and_dequeue_creates_attempts(store: LightningStore) -> None:
    first = await store.enqueue_rollout({"n": 0})
    rest = await store.enqueue_many_rollouts(
        [EnqueueRolloutRequest(input={"n": i}, mode="val") for i in range(1, 4)]
    )
    ids = [first.rollout_id] + [r.rollout_id for r in rest]
    assert [r.status for r in rest] == ["queuing"] * 3
    got = [await store.dequeue_rollout(worker_id="w") for _ in range(2)]
    got += list(await store.dequeue_many_rollouts(limit=5))
    assert [g.rollout_id for g in got] == ids
    for g in got:
        assert g.status == "preparing"
        assert g.attempt.sequence_id == 1 and g.attempt.status == "preparing"
    assert await store.dequeue_rollout() is None
    assert await store.dequeue_many_rollouts(limit=0) == []
    fetched = await store.get_rollout_by_id(ids[0])
    assert fetched is not None and fetched.attempt.attempt_id == got[0].attempt.attempt_id
    assert got[2].attempt.worker_id is None and got[0].attempt.worker_id == "w"


async def test_start_rollout_bypasses_queue(store: LightningStore) -> None:
    ar = await store.start_rollout({"x": 1}, worker_id="w1")
    assert ar.status == "preparing" and ar.attempt.sequence_id == 1
    assert ar.attempt.worker_id == "w1"
    assert await store.dequeue_rollout() is None
    worker = await store.get_worker_by_id("w1")
    assert worker is not None and worker.status == "busy"
    assert worker.current_rollout_id == ar.rollout_id


async def test_first_span_makes_running_and_is_a_heartbeat(store: LightningStore) -> None:
    await store.enqueue_rollout(1)
    ar = await store.dequeue_rollout()
    assert ar is not None
    before = time.time()
    stored = await store.add_span(span(ar.rollout_id, ar.attempt.attempt_id, 1))
    assert stored is not None
    attempt = await store.get_latest_attempt(ar.rollout_id)
    assert attempt is not None and attempt.status == "running"
    assert attempt.last_heartbeat_time is not None and attempt.last_heartbeat_time >= before
    rollout = await store.get_rollout_by_id(ar.rollout_id)
    assert rollout is not None and rollout.status == "running"


async def test_success_ends_rollout_attempt_and_frees_worker(store: LightningStore) -> None:
    await store.enqueue_rollout(1)
    ar = await store.dequeue_rollout(worker_id="w1")
    assert ar is not None
    a = await store.update_attempt(ar.rollout_id, ar.attempt.attempt_id, status="succeeded")
    assert a.status == "succeeded" and a.end_time is not None
    r = await store.get_rollout_by_id(ar.rollout_id)
    assert r is not None and r.status == "succeeded" and r.end_time is not None
    w = await store.get_worker_by_id("w1")
    assert w is not None and w.status == "idle" and w.current_rollout_id is None


async def test_retry_requeues_until_max_attempts(store: LightningStore) -> None:
    cfg = RolloutConfig(max_attempts=2, retry_condition=["failed"])
    r = await store.enqueue_rollout(1, config=cfg)
    a1 = await store.dequeue_rollout()
    assert a1 is not None
    await store.update_attempt(r.rollout_id, "latest", status="failed")
    got = await store.get_rollout_by_id(r.rollout_id)
    assert got is not None and got.status == "requeuing" and got.end_time is None
    a2 = await store.dequeue_rollout()
    assert a2 is not None and a2.rollout_id == r.rollout_id
    assert a2.attempt.sequence_id == 2 and a2.attempt.attempt_id != a1.attempt.attempt_id
    await store.update_attempt(r.rollout_id, a2.attempt.attempt_id, status="failed")
    got = await store.get_rollout_by_id(r.rollout_id)
    assert got is not None and got.status == "failed" and got.end_time is not None
    assert await store.dequeue_rollout() is None
    attempts = await store.query_attempts(r.rollout_id)
    assert [a.sequence_id for a in attempts] == [1, 2] and attempts.total == 2


async def test_no_retry_for_status_outside_retry_condition(store: LightningStore) -> None:
    cfg = RolloutConfig(max_attempts=3, retry_condition=["timeout"])
    r = await store.enqueue_rollout(1, config=cfg)
    await store.dequeue_rollout()
    await store.update_attempt(r.rollout_id, "latest", status="failed")
    got = await store.get_rollout_by_id(r.rollout_id)
    assert got is not None and got.status == "failed"


async def test_only_the_latest_attempt_moves_the_rollout(store: LightningStore) -> None:
    ar = await store.start_rollout(1)
    second = await store.start_attempt(ar.rollout_id, worker_id="w2")
    assert second.attempt.sequence_id == 2
    await store.update_attempt(ar.rollout_id, ar.attempt.attempt_id, status="succeeded")
    got = await store.get_rollout_by_id(ar.rollout_id)
    assert got is not None and got.status == "preparing"
    await store.update_attempt(ar.rollout_id, "latest", status="running")
    got = await store.get_rollout_by_id(ar.rollout_id)
    assert got is not None and got.status == "running"
    assert got.attempt.attempt_id == second.attempt.attempt_id


async def test_timeout_detected_by_scan_health(store: LightningStore) -> None:
    cfg = RolloutConfig(timeout_seconds=0.05, max_attempts=2, retry_condition=["timeout"])
    r = await store.enqueue_rollout(1, config=cfg)
    await store.dequeue_rollout(worker_id="w1")
    assert await store.scan_health() == []
    await asyncio.sleep(0.1)
    changed = await store.scan_health()
    assert [(a.rollout_id, a.status) for a in changed] == [(r.rollout_id, "timeout")]
    got = await store.get_rollout_by_id(r.rollout_id)
    assert got is not None and got.status == "requeuing"
    w = await store.get_worker_by_id("w1")
    assert w is not None and w.status == "unknown"
    again = await store.dequeue_rollout()
    assert again is not None and again.rollout_id == r.rollout_id
    assert again.attempt.sequence_id == 2


async def test_unresponsive_detected_by_scan_health(store: LightningStore) -> None:
    cfg = RolloutConfig(unresponsive_seconds=0.1)
    r = await store.enqueue_rollout(1, config=cfg)
    ar = await store.dequeue_rollout()
    assert ar is not None
    await store.add_span(span(r.rollout_id, ar.attempt.attempt_id, 1))
    assert await store.scan_health() == []
    await asyncio.sleep(0.15)
    changed = await store.scan_health()
    assert [a.status for a in changed] == ["unresponsive"]
    got = await store.get_rollout_by_id(r.rollout_id)
    assert got is not None and got.status == "failed" and got.end_time is not None
    assert await store.scan_health() == []


async def test_background_scanner_runs_without_calls(make_store: MakeStore) -> None:
    store = await make_store(scan_interval=0.05)
    r = await store.enqueue_rollout(1, config=RolloutConfig(timeout_seconds=0.05))
    await store.dequeue_rollout()
    done = await store.wait_for_rollouts(rollout_ids=[r.rollout_id], timeout=5)
    assert [d.status for d in done] == ["failed"]
    latest = await store.get_latest_attempt(r.rollout_id)
    assert latest is not None and latest.status == "timeout"


# ----------------------------------------------------------------------------- rollouts


async def test_update_rollout(store: LightningStore) -> None:
    r = await store.enqueue_rollout({"a": 1})
    u = await store.update_rollout(r.rollout_id, input={"b": 2}, mode="test", metadata=None)
    assert u.input == {"b": 2} and u.mode == "test" and u.metadata is None
    assert u.status == "queuing"
    c = await store.update_rollout(r.rollout_id, status="cancelled")
    assert c.status == "cancelled" and c.end_time is not None
    assert await store.dequeue_rollout() is None
    q = await store.update_rollout(r.rollout_id, status="queuing")
    assert q.status == "queuing"
    assert (await store.dequeue_rollout()) is not None
    assert await store.dequeue_rollout() is None
    with pytest.raises(InvalidRequestError, match="status"):
        await store.update_rollout(r.rollout_id, status=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="config"):
        await store.update_rollout(r.rollout_id, config=None)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="ro-missing"):
        await store.update_rollout("ro-missing", status="failed")
    with pytest.raises(InvalidRequestError):
        await store.update_rollout(r.rollout_id, mode="bogus")  # type: ignore[arg-type]


async def test_update_attempt_errors(store: LightningStore) -> None:
    r = await store.enqueue_rollout(1)
    with pytest.raises(NotFoundError, match="no attempts"):
        await store.update_attempt(r.rollout_id, "latest", status="running")
    await store.dequeue_rollout()
    with pytest.raises(NotFoundError, match="ro-nope"):
        await store.update_attempt("ro-nope", "latest", status="running")
    with pytest.raises(NotFoundError, match="at-nope"):
        await store.update_attempt(r.rollout_id, "at-nope", status="running")
    for field in ("status", "worker_id", "last_heartbeat_time", "metadata"):
        with pytest.raises(InvalidRequestError, match=field):
            await store.update_attempt(r.rollout_id, "latest", **{field: None})
    with pytest.raises(NotFoundError, match="ro-nope"):
        await store.start_attempt("ro-nope")
    a = await store.update_attempt(
        r.rollout_id, "latest", worker_id="w9", last_heartbeat_time=123.0, metadata={"m": 1}
    )
    assert (a.worker_id, a.last_heartbeat_time, a.metadata) == ("w9", 123.0, {"m": 1})
    w = await store.get_worker_by_id("w9")
    assert w is not None and w.status == "busy" and w.current_attempt_id == a.attempt_id


async def test_query_rollouts_filters_sort_pagination(store: LightningStore) -> None:
    made = []
    for i in range(5):
        made.append(await store.enqueue_rollout(i))
        await asyncio.sleep(0.002)
    ids = [r.rollout_id for r in made]
    await store.dequeue_many_rollouts(limit=2)
    page = await store.query_rollouts()
    assert [r.rollout_id for r in page] == ids and page.total == 5
    assert hasattr(page.items[0], "attempt") and not hasattr(page.items[4], "attempt")
    q = await store.query_rollouts(status_in=["queuing"])
    assert [r.rollout_id for r in q] == ids[2:]
    q = await store.query_rollouts(rollout_id_in=ids[:3], status_in=["queuing"])
    assert [r.rollout_id for r in q] == ids[2:3]
    q = await store.query_rollouts(rollout_id_in=ids[:1], status_in=["queuing"], filter_logic="or")
    assert [r.rollout_id for r in q] == [ids[0], *ids[2:]]
    q = await store.query_rollouts(rollout_id_contains=ids[3][3:9])
    assert [r.rollout_id for r in q] == [ids[3]]
    q = await store.query_rollouts(sort_by="start_time", sort_order="desc", limit=2, offset=1)
    assert [r.rollout_id for r in q] == [ids[3], ids[2]]
    assert (q.total, q.limit, q.offset) == (5, 2, 1)
    q = await store.query_rollouts(status=["preparing"])  # v0.3's deprecated alias
    assert [r.rollout_id for r in q] == ids[:2]
    await store.update_rollout(ids[4], status="succeeded")
    q = await store.query_rollouts(sort_by="end_time")  # nulls last for *_time fields
    assert q.items[0].rollout_id == ids[4]
    q = await store.query_rollouts(sort_by="end_time", sort_order="desc")
    assert q.items[-1].rollout_id == ids[4]
    q = await store.query_rollouts(sort_by="status", offset=4)
    assert [r.rollout_id for r in q] == [ids[4]] and q.total == 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"limit": 0}, "limit"),
        ({"limit": -2}, "limit"),
        ({"offset": -1}, "offset"),
        ({"sort_by": "input"}, "sort"),
        ({"sort_by": "nope"}, "nope"),
        ({"sort_order": "up"}, "sort_order"),
    ],
)
async def test_bad_pagination_is_invalid_request(
    store: LightningStore, kwargs: dict[str, Any], match: str
) -> None:
    for call in (
        lambda: store.query_rollouts(**kwargs),
        lambda: store.query_workers(**kwargs),
        lambda: store.query_resources(**kwargs),
        lambda: store.query_attempts("ro-x", **kwargs),
        lambda: store.query_spans("ro-x", **kwargs),
    ):
        with pytest.raises(InvalidRequestError, match=match):
            await call()
    with pytest.raises(InvalidRequestError, match="filter_logic"):
        await store.query_rollouts(filter_logic="xor")  # type: ignore[arg-type]


async def test_wait_for_rollouts(store: LightningStore) -> None:
    r1 = await store.enqueue_rollout(1)
    r2 = await store.enqueue_rollout(2)
    await store.update_rollout(r1.rollout_id, status="succeeded")
    t0 = time.monotonic()
    got = await store.wait_for_rollouts(rollout_ids=[r1.rollout_id, r2.rollout_id], timeout=0.2)
    assert [r.rollout_id for r in got] == [r1.rollout_id]
    assert time.monotonic() - t0 >= 0.15
    got = await store.wait_for_rollouts(rollout_ids=[r2.rollout_id, "ro-unknown"], timeout=0)
    assert got == []

    async def finish_later() -> None:
        await asyncio.sleep(0.1)
        await store.update_rollout(r2.rollout_id, status="failed")

    task = asyncio.create_task(finish_later())
    t0 = time.monotonic()
    got = await store.wait_for_rollouts(rollout_ids=[r1.rollout_id, r2.rollout_id], timeout=10)
    await task
    assert sorted(r.status for r in got) == ["failed", "succeeded"]
    assert time.monotonic() - t0 < 2


# ----------------------------------------------------------------------------- resources


async def test_resources_versions_and_latest(store: LightningStore) -> None:
    assert await store.get_latest_resources() is None
    llm = LLM(endpoint="http://x/v1", model="m", sampling_parameters={"temperature": 0.1})
    a = await store.add_resources({"llm": llm})
    assert a.resources_id.startswith("rs-") and a.version == 1
    assert (await store.get_latest_resources()).resources_id == a.resources_id  # type: ignore[union-attr]
    r = await store.enqueue_rollout(1)
    assert r.resources_id == a.resources_id
    b = await store.add_resources(
        {"prompt": PromptTemplate(template="Hi {name}", engine="f-string")}
    )
    assert (await store.get_latest_resources()).resources_id == b.resources_id  # type: ignore[union-attr]
    a2 = await store.update_resources(
        a.resources_id,
        {"llm": llm, "p": {"resource_type": "prompt_template", "template": "t", "engine": "jinja"}},
    )
    assert a2.version == 2 and a2.create_time == a.create_time
    latest = await store.get_latest_resources()
    assert latest is not None and latest.resources_id == a.resources_id and latest.version == 2
    assert isinstance(latest.resources["p"], PromptTemplate)
    c = await store.update_resources("rs-custom", {"llm": llm})
    assert c.version == 1 and (await store.get_resources_by_id("rs-custom")) == c
    assert await store.get_resources_by_id("rs-none") is None
    ar = await store.start_rollout(1, resources_id="rs-custom")
    assert ar.resources_id == "rs-custom"
    q = await store.query_resources()
    assert [x.resources_id for x in q] == [a.resources_id, b.resources_id, "rs-custom"]
    q = await store.query_resources(sort_by="version", sort_order="desc", limit=1)
    assert [x.resources_id for x in q] == [a.resources_id] and q.total == 3
    q = await store.query_resources(resources_id_contains="custom")
    assert [x.resources_id for x in q] == ["rs-custom"]
    q = await store.query_resources(resources_id=b.resources_id)
    assert [x.resources_id for x in q] == [b.resources_id]
    with pytest.raises(InvalidRequestError, match="resource"):
        await store.add_resources({"bad": {"resource_type": "nope"}})  # type: ignore[dict-item]


# ----------------------------------------------------------------------------- spans


async def test_span_sequence_ids_per_rollout(store: LightningStore) -> None:
    a = await store.start_rollout(1)
    b = await store.start_rollout(2)
    aid = a.attempt.attempt_id
    assert [await store.get_next_span_sequence_id(a.rollout_id, aid) for _ in range(3)] == [1, 2, 3]
    assert await store.get_next_span_sequence_id(b.rollout_id, b.attempt.attempt_id) == 1
    await store.add_span(span(a.rollout_id, aid, 10))
    assert await store.get_next_span_sequence_id(a.rollout_id, aid) == 11
    await store.add_span(span(a.rollout_id, aid, 5))  # a smaller id does not move it back
    many = await store.get_many_span_sequence_ids(
        [(a.rollout_id, aid), (b.rollout_id, "x"), (a.rollout_id, aid)]
    )
    assert list(many) == [12, 2, 13]
    # The counter is per rollout, across attempts.
    second = await store.start_attempt(a.rollout_id)
    assert await store.get_next_span_sequence_id(a.rollout_id, second.attempt.attempt_id) == 14


async def test_duplicate_spans_are_ignored(store: LightningStore) -> None:
    ar = await store.start_rollout(1)
    rid, aid = ar.rollout_id, ar.attempt.attempt_id
    s1 = span(rid, aid, 1, span_id="1" * 16)
    assert await store.add_span(s1) is not None
    assert await store.add_span(s1) is None
    s2 = span(rid, aid, 2, span_id="2" * 16)
    result = await store.add_many_spans([s1, s2, s2, span(rid, aid, 3, span_id="3" * 16)])
    assert [o.status for o in result.outcomes] == ["duplicate", "stored", "duplicate", "stored"]
    assert [s.span_id for s in result] == ["2" * 16, "3" * 16]
    assert result.duplicate_count == 2 and result.rejected_count == 0
    page = await store.query_spans(rid)
    assert [s.span_id for s in page] == ["1" * 16, "2" * 16, "3" * 16]
    # The same span id in another attempt is a different span.
    other = await store.start_attempt(rid)
    assert await store.add_span(span(rid, other.attempt.attempt_id, 4, span_id="1" * 16))
    assert (await store.statistics())["total_spans"] == 4


async def test_query_spans_filters_sort_and_attempts(store: LightningStore) -> None:
    ar = await store.start_rollout(1)
    rid, a1 = ar.rollout_id, ar.attempt.attempt_id
    t1, t2 = "a" * 32, "b" * 32
    await store.add_many_spans(
        [
            span(rid, a1, 1, "root", span_id="0" * 16, trace_id=t1, parent_id=None),
            span(
                rid,
                a1,
                2,
                "openai.chat.completion",
                span_id="1" * 16,
                trace_id=t1,
                parent_id="0" * 16,
            ),
            span(
                rid,
                a1,
                3,
                "agentlightning.annotation",
                span_id="2" * 16,
                trace_id=t1,
                parent_id="0" * 16,
            ),
        ]
    )
    a2 = (await store.start_attempt(rid)).attempt.attempt_id
    await store.add_many_spans(
        [span(rid, a2, 4, "root", span_id="3" * 16, trace_id=t2, parent_id=None)]
    )

    async def names(**kw: Any) -> list[str]:
        return [s.span_id[0] for s in await store.query_spans(rid, **kw)]

    assert await names() == ["0", "1", "2", "3"]
    assert await names(attempt_id=a1) == ["0", "1", "2"]
    assert await names(attempt_id="latest") == ["3"]
    assert await names(name="root") == ["0", "3"]
    assert await names(name_contains="chat") == ["1"]
    assert await names(trace_id=t2) == ["3"]
    assert await names(trace_id_contains="aaa", name="root") == ["0"]
    assert await names(trace_id_contains="aaa", name="root", filter_logic="or") == [
        "0",
        "1",
        "2",
        "3",
    ]
    assert await names(parent_id="0" * 16) == ["1", "2"]
    assert await names(parent_id_contains="000", span_id="3" * 16, filter_logic="or") == [
        "1",
        "2",
        "3",
    ]
    assert await names(span_id_contains="2") == ["2"]
    assert await names(sort_order="desc") == ["3", "2", "1", "0"]
    assert await names(sort_by="name", sort_order="desc") == ["0", "3", "1", "2"]
    assert await names(sort_by="parent_id") == ["0", "3", "1", "2"]  # nulls first
    page = await store.query_spans(rid, limit=2, offset=1)
    assert [s.sequence_id for s in page] == [2, 3] and page.total == 4
    assert (await store.query_spans("ro-unknown")).total == 0
    assert (await store.query_spans("ro-unknown", attempt_id="latest")).total == 0
    texts, total = await store.query_spans_json(rid, attempt_id="latest", name="root")
    assert total == 1 and json.loads(texts[0])["span_id"] == "3" * 16
    with pytest.raises(InvalidRequestError, match="bogus"):
        await store.query_spans_json(rid, bogus="x")


async def test_spans_for_unknown_attempt_are_rejected(store: LightningStore) -> None:
    ar = await store.start_rollout(1)
    with pytest.raises(NotFoundError, match="at-unknown"):
        await store.add_span(span(ar.rollout_id, "at-unknown", 1))
    result = await store.add_many_spans(
        [span(ar.rollout_id, "at-unknown", 1), span(ar.rollout_id, ar.attempt.attempt_id, 2)]
    )
    assert [o.status for o in result.outcomes] == ["rejected", "stored"]
    assert "at-unknown" in (result.rejection_message or "")


# ----------------------------------------------------------------------------- auto-registration


async def test_unknown_rollout_is_registered_from_its_spans(store: LightningStore) -> None:
    rid, aid = "ro-prod000000001", "at-prod0001"
    r = await store.add_many_spans([span(rid, aid, 1, "llm", parent_id="0" * 16)])
    assert [o.status for o in r.outcomes] == ["stored"]
    got = await store.get_rollout_by_id(rid)
    assert got is not None and got.status == "running"
    assert got.attempt.attempt_id == aid and got.attempt.status == "running"
    assert got.attempt.sequence_id == 1
    # The run's root span ends OK: the rollout succeeded.
    await store.add_span(span(rid, aid, 2, "workflow", parent_id=None, status_code="OK"))
    got = await store.get_rollout_by_id(rid)
    assert got is not None and got.status == "succeeded" and got.end_time is not None
    assert got.attempt.status == "succeeded"
    assert [s.sequence_id for s in await store.query_spans(rid)] == [1, 2]
    # A root span that ends in ERROR fails the rollout.
    await store.add_span(
        span("ro-prod000000002", aid, 1, "workflow", parent_id=None, status_code="ERROR")
    )
    failed = await store.get_rollout_by_id("ro-prod000000002")
    assert failed is not None and failed.status == "failed"
    done = await store.wait_for_rollouts(rollout_ids=[rid, "ro-prod000000002"], timeout=1)
    assert len(done) == 2
    # A further attempt id on an auto-registered rollout is registered as its next attempt.
    await store.add_span(span(rid, "at-prod0002", 1, "llm"))
    attempts = await store.query_attempts(rid)
    assert [(a.attempt_id, a.sequence_id) for a in attempts] == [(aid, 1), ("at-prod0002", 2)]


async def test_auto_registered_rollouts_take_their_input_from_the_root_span(
    store: LightningStore,
) -> None:
    """Our extension: a production run's root span carries ``lightspan.rollout.input`` /
    ``.expected`` (content captured) or their digests; the rollout keeps them."""
    root = span("ro-in", "at-1", 2, "workflow", parent_id=None, status_code="OK")
    root.attributes.update(
        {"lightspan.rollout.input": '{"q": 1}', "lightspan.rollout.expected": '"4"'}
    )
    await store.add_many_spans([span("ro-in", "at-1", 1, "llm"), root])
    got = await store.get_rollout_by_id("ro-in")
    assert got is not None and got.input == {"input": {"q": 1}, "expected": "4"}
    assert got.status == "succeeded"
    hidden = span("ro-digest", "at-1", 1, "workflow", parent_id=None, status_code="OK")
    hidden.attributes["lightspan.rollout.input_digest"] = "sha256:ab"
    await store.add_span(hidden)
    got = await store.get_rollout_by_id("ro-digest")
    assert got is not None and got.input is None
    assert got.metadata["lightspan.rollout.input_digest"] == "sha256:ab"  # type: ignore[index]
    # An explicitly started rollout keeps the input it was given.
    ar = await store.start_rollout("given")
    own = span(ar.rollout_id, ar.attempt.attempt_id, 1, "workflow", parent_id=None)
    own.attributes["lightspan.rollout.input"] = '"other"'
    await store.add_span(own)
    assert (await store.get_rollout_by_id(ar.rollout_id)).input == "given"  # type: ignore[union-attr]


async def test_auto_registered_rollouts_time_out_without_their_root_span(
    make_store: MakeStore,
) -> None:
    store = await make_store(auto_rollout_timeout=0.5)
    now = time.time()
    await store.add_span(span("ro-lost", "at-1", 1, start_time=now))  # the root never comes
    await store.add_span(span("ro-done", "at-1", 1, parent_id=None, status_code="OK"))
    explicit = await store.start_rollout(1)  # explicit rollouts keep their own config
    lost = await store.get_rollout_by_id("ro-lost")
    assert lost is not None and lost.status == "running" and lost.config.timeout_seconds == 0.5
    assert await store.scan_health() == []
    await asyncio.sleep(0.7)
    changed = await store.scan_health()
    assert [(a.rollout_id, a.status) for a in changed] == [("ro-lost", "timeout")]
    lost = await store.get_rollout_by_id("ro-lost")
    assert lost is not None and lost.status == "failed"
    done = await store.get_rollout_by_id("ro-done")
    assert done is not None and done.status == "succeeded"
    again = await store.get_rollout_by_id(explicit.rollout_id)
    assert again is not None and again.status == explicit.status
    assert await store.scan_health() == []
    # The default, and 0 meaning "never".
    default = await make_store()
    await default.add_span(span("ro-default", "at-1", 1, start_time=now))
    got = await default.get_rollout_by_id("ro-default")
    assert got is not None and got.config.timeout_seconds == DEFAULT_AUTO_ROLLOUT_TIMEOUT
    never = await make_store(auto_rollout_timeout=0)
    await never.add_span(span("ro-never", "at-1", 1, start_time=now))
    got = await never.get_rollout_by_id("ro-never")
    assert got is not None and got.config.timeout_seconds is None


async def test_health_scan_finds_only_due_rollouts(make_store: MakeStore) -> None:
    """The scan's candidates come from one query (``health_due``), not from every running
    rollout: idle rollouts without limits, or within them, are not even read."""
    store = await make_store()
    idle = [await store.start_rollout(i) for i in range(30)]
    for ar in idle[:10]:
        await store.update_attempt(ar.rollout_id, ar.attempt.attempt_id, status="running")
    slow = await store.start_rollout(
        "slow", config=RolloutConfig(timeout_seconds=3600, unresponsive_seconds=3600)
    )
    due = await store.start_rollout("due", config=RolloutConfig(unresponsive_seconds=0.2))
    late = await store.start_rollout("late", config=RolloutConfig(timeout_seconds=0.2))
    await asyncio.sleep(0.3)
    async with store._tx(write=False) as tx:  # type: ignore[attr-defined]
        found = await tx.health_due(time.time())
    assert found == sorted([due.rollout_id, late.rollout_id])
    changed = await store.scan_health()
    assert sorted((a.rollout_id, a.status) for a in changed) == sorted(
        [(due.rollout_id, "unresponsive"), (late.rollout_id, "timeout")]
    )
    assert (await store.get_rollout_by_id(slow.rollout_id)).status == slow.status  # type: ignore[union-attr]


async def _due(store: LightningStore, now: float) -> set[str]:
    async with store._tx(write=False) as tx:  # type: ignore[attr-defined]
        return set(await tx.health_due(now))


async def _verdicts(store: LightningStore, ids: list[str], now: float) -> set[str]:
    """Rollouts that ``health_verdict`` marks at ``now``: what the index must never miss."""
    marked = set()
    for rollout_id in ids:
        r = await store.get_rollout_by_id(rollout_id)
        assert r is not None
        if r.status in ("preparing", "running") and r.attempt is not None:
            if lc.health_verdict(r, r.attempt, now) is not None:
                marked.add(rollout_id)
    return marked


async def test_due_times_never_miss_a_rollout_the_verdict_marks(store: LightningStore) -> None:
    """Seeded random writes of every kind that moves a due time (configs, statuses, heartbeats,
    new attempts, spans on old attempts, scans); after each, at instants from now to far
    ahead, the index's candidates include every rollout ``health_verdict`` would mark (a due
    time may be early, never late), and far ahead they are exactly the running rollouts with
    a limit (no candidate left behind by a finished rollout or a removed limit)."""
    rng = random.Random(16)
    configs = [
        RolloutConfig(),
        RolloutConfig(timeout_seconds=50),
        RolloutConfig(unresponsive_seconds=20),
        RolloutConfig(timeout_seconds=300, unresponsive_seconds=2),
        RolloutConfig(timeout_seconds=0.01),
    ]
    ids: list[str] = []
    seq = 0
    for step in range(120):
        op = rng.randrange(10) if ids else 0
        rid = rng.choice(ids) if ids else ""
        if op == 0:
            ids.append((await store.start_rollout(step, config=rng.choice(configs))).rollout_id)
        elif op == 1:
            await store.enqueue_rollout(step, config=rng.choice(configs))
            got = await store.dequeue_rollout(worker_id="w")  # maybe a requeued one
            if got is not None and got.rollout_id not in ids:
                ids.append(got.rollout_id)
        elif op == 2:
            await store.update_rollout(rid, config=rng.choice(configs))
        elif op == 3:
            status = rng.choice(["running", "preparing", "succeeded", "requeuing", "failed"])
            await store.update_rollout(rid, status=status)  # type: ignore[arg-type]
        elif op == 4:
            hb = time.time() - rng.choice([0, 1, 30, 400])
            await store.update_attempt(rid, "latest", last_heartbeat_time=hb)
        elif op == 5:
            status = rng.choice(["running", "succeeded", "failed", "preparing"])
            await store.update_attempt(rid, "latest", status=status)  # type: ignore[arg-type]
        elif op in (6, 7):  # a span batch on the latest attempt, or on the first one
            attempts = (await store.query_attempts(rid)).items
            target = attempts[-1] if op == 6 else attempts[0]
            seq += 1
            await store.add_span(span(rid, target.attempt_id, seq, span_id=f"{seq:016x}"))
        elif op == 8:
            await store.start_attempt(rid)
        else:
            await store.scan_health()
        now = time.time()
        for ahead in (0.0, 1.5, 25.0, 60.0, 1e3):
            due = await _due(store, now + ahead)
            missed = await _verdicts(store, ids, now + ahead) - due
            assert not missed, (step, op, ahead, missed)
    # Far ahead: exactly the running rollouts with a limit.
    far = time.time() + 1e6
    assert await _due(store, far) == await _verdicts(store, ids, far)


async def test_a_stale_due_time_is_an_extra_candidate_then_cleared(make_store: MakeStore) -> None:
    """SQL backends: a span on an older attempt gives it a due time as if it were the latest,
    so the rollout becomes a candidate although its latest attempt is not due. The scan
    re-checks it under the lock, changes nothing, and recomputes its due times, so it stops
    being one. (The in-memory backend recomputes from the latest attempt on every write.)"""
    store = await make_store()
    ar = await store.start_rollout(1, config=RolloutConfig(unresponsive_seconds=0.3))
    second = await store.start_attempt(ar.rollout_id)
    await store.update_attempt(
        ar.rollout_id, second.attempt.attempt_id, last_heartbeat_time=time.time() + 100
    )
    await store.add_span(span(ar.rollout_id, ar.attempt.attempt_id, 1))
    await asyncio.sleep(0.4)
    expected = set() if make_store.backend == "memory" else {ar.rollout_id}  # type: ignore[attr-defined]
    assert await _due(store, time.time()) == expected  # the extra candidate
    assert await store.scan_health() == []
    assert await _due(store, time.time()) == set()
    got = await store.get_rollout_by_id(ar.rollout_id)
    assert got is not None and got.status == "preparing"
    assert got.attempt is not None and got.attempt.attempt_id == second.attempt.attempt_id


async def test_due_times_follow_rollout_writes(store: LightningStore) -> None:
    """Shortening a limit makes a rollout due at once; finishing it removes it from the
    index; putting it back to running brings it back; a heartbeat pushes it out."""
    ar = await store.start_rollout(1, config=RolloutConfig(timeout_seconds=3600))
    now = time.time()
    assert await _due(store, now) == set()
    await store.update_rollout(ar.rollout_id, config=RolloutConfig(timeout_seconds=0))
    assert await _due(store, time.time()) == {ar.rollout_id}
    await store.update_rollout(ar.rollout_id, status="succeeded")
    assert await _due(store, time.time() + 1e6) == set()
    await store.update_rollout(ar.rollout_id, status="running")
    assert await _due(store, time.time()) == {ar.rollout_id}
    await store.update_rollout(ar.rollout_id, config=RolloutConfig(unresponsive_seconds=10))
    assert await _due(store, time.time()) == set()
    start = ar.attempt.start_time
    assert await _due(store, start + 10.2) == {ar.rollout_id}  # no heartbeat yet: from start
    await asyncio.sleep(0.3)
    await store.add_span(span(ar.rollout_id, ar.attempt.attempt_id, 1))
    assert await _due(store, start + 10.2) == set()  # the span's heartbeat moved it later
    assert await _due(store, time.time() + 10.01) == {ar.rollout_id}


async def test_auto_registration_can_be_turned_off(make_store: MakeStore) -> None:
    store = await make_store(auto_register_rollouts=False)
    result = await store.add_many_spans([span("ro-stranger", "at-1", 1)])
    assert [o.status for o in result.outcomes] == ["rejected"]
    assert "ro-stranger" in (result.rejection_message or "")
    with pytest.raises(NotFoundError, match="ro-stranger"):
        await store.add_span(span("ro-stranger", "at-1", 1))
    assert await store.get_rollout_by_id("ro-stranger") is None


# ----------------------------------------------------------------------------- workers, stats


async def test_workers(store: LightningStore) -> None:
    w = await store.update_worker("w1", heartbeat_stats={"cpu": 0.5})
    assert w.status == "unknown" and w.heartbeat_stats == {"cpu": 0.5}
    assert w.last_heartbeat_time is not None
    w = await store.update_worker("w1")
    assert w.heartbeat_stats == {"cpu": 0.5}
    with pytest.raises(InvalidRequestError, match="heartbeat_stats"):
        await store.update_worker("w1", heartbeat_stats=None)  # type: ignore[arg-type]
    assert await store.dequeue_rollout(worker_id="w2") is None
    w2 = await store.get_worker_by_id("w2")
    assert w2 is not None and w2.status == "idle" and w2.last_dequeue_time is not None
    await store.enqueue_rollout(1)
    ar = await store.dequeue_rollout(worker_id="w2")
    assert ar is not None
    w2 = await store.get_worker_by_id("w2")
    assert w2 is not None and w2.status == "busy" and w2.current_rollout_id == ar.rollout_id
    assert w2.current_attempt_id == ar.attempt.attempt_id
    q = await store.query_workers(status_in=["busy"])
    assert [x.worker_id for x in q] == ["w2"]
    q = await store.query_workers(status_in=["busy"], worker_id_contains="1", filter_logic="or")
    assert [x.worker_id for x in q] == ["w1", "w2"]
    q = await store.query_workers(sort_by="worker_id", sort_order="desc", limit=1)
    assert [x.worker_id for x in q] == ["w2"] and q.total == 2
    assert await store.get_worker_by_id("nobody") is None


async def test_statistics(store: LightningStore) -> None:
    ar = await store.start_rollout(1, worker_id="w")
    await store.enqueue_rollout(2)
    await store.add_span(span(ar.rollout_id, ar.attempt.attempt_id, 1))
    await store.add_resources({"p": PromptTemplate(template="x", engine="f-string")})
    stats = await store.statistics()
    assert {k: stats[k] for k in stats if k.startswith("total_")} == {
        "total_rollouts": 2,
        "total_attempts": 1,
        "total_spans": 1,
        "total_resources": 1,
        "total_workers": 1,
    }
    assert stats["name"].endswith("LightningStore") and stats["uptime"] >= 0
    assert await store.get_statistics() == {
        **stats,
        "uptime": pytest.approx(stats["uptime"], abs=5),
    }


# ----------------------------------------------------------------------------- concurrency


async def test_concurrent_dequeuers_get_each_rollout_once(make_store: MakeStore) -> None:
    """32 concurrent dequeuers (spread over several store instances sharing one database for
    SQLite and PostgreSQL) never receive the same rollout twice and together receive all."""
    stores = [await make_store()]
    if make_store.backend != "memory":  # type: ignore[attr-defined]
        stores += [await make_store(), await make_store()]
    n = 150
    enqueued = await stores[0].enqueue_many_rollouts(
        [EnqueueRolloutRequest(input=i) for i in range(n)]
    )
    got: list[tuple[str, str]] = []

    async def worker(k: int) -> None:
        store = stores[k % len(stores)]
        while True:
            batch = await store.dequeue_many_rollouts(limit=1 + k % 3, worker_id=f"w{k}")
            if not batch:
                return
            got.extend((r.rollout_id, r.attempt.attempt_id) for r in batch)

    await asyncio.gather(*(worker(k) for k in range(32)))
    ids = [g[0] for g in got]
    assert len(ids) == n and set(ids) == {r.rollout_id for r in enqueued}
    for r in enqueued[:5]:
        attempts = await stores[0].query_attempts(r.rollout_id)
        assert attempts.total == 1


async def test_concurrent_span_batches_keep_sequence_ids_unique(make_store: MakeStore) -> None:
    stores = [await make_store()]
    if make_store.backend != "memory":  # type: ignore[attr-defined]
        stores.append(await make_store())
    ar = await stores[0].start_rollout(1)
    rid, aid = ar.rollout_id, ar.attempt.attempt_id

    async def producer(k: int) -> None:
        store = stores[k % len(stores)]
        for _ in range(5):
            seqs = await store.get_many_span_sequence_ids([(rid, aid)] * 4)
            await store.add_many_spans([span(rid, aid, s) for s in seqs])

    await asyncio.gather(*(producer(k) for k in range(8)))
    page = await stores[0].query_spans(rid)
    assert [s.sequence_id for s in page] == list(range(1, 161))


async def test_store_issues_sequence_ids_inside_add_many_spans(store: LightningStore) -> None:
    ar = await store.start_rollout(1)
    rid, aid = ar.rollout_id, ar.attempt.attempt_id
    batch = [span(rid, aid, 0), span(rid, aid, 7), span(rid, aid, 0), span("", aid, 0)]
    result = await store.add_many_spans(batch, assign_sequence_ids=[0, 2, 3])
    assert [o.status for o in result.outcomes] == ["stored", "stored", "stored", "rejected"]
    # The explicit 7 moves the counter first; the others get the next ids, in order.
    assert [s.sequence_id for s in result] == [8, 7, 9]
    assert [s.sequence_id for s in await store.query_spans(rid)] == [7, 8, 9]
    assert await store.get_next_span_sequence_id(rid, aid) == 10


async def test_a_batch_over_several_rollouts_and_attempts(store: LightningStore) -> None:
    """A runner's batch interleaves attempts (the OTLP intake's common batch): each attempt gets
    its heartbeat, each rollout its counter, ids issued in arrival order across a rollout's
    attempts, duplicates (stored before, or twice in the batch) found per attempt."""
    a, b = await store.start_rollout(1), await store.start_rollout(2)
    a2 = await store.start_attempt(a.rollout_id)
    ra, rb = a.rollout_id, b.rollout_id
    a1, a2id, b1 = a.attempt.attempt_id, a2.attempt.attempt_id, b.attempt.attempt_id
    assert await store.add_span(span(ra, a1, 1, span_id="a" * 16))
    batch = [
        span(ra, a1, 0, span_id="1" * 16),  # issued
        span(rb, b1, 5, span_id="2" * 16),  # carried
        span(ra, a2id, 0, span_id="3" * 16),  # issued, the rollout's other attempt
        span(ra, a1, 0, span_id="a" * 16),  # stored before: duplicate
        span(rb, b1, 3, span_id="4" * 16),  # carried
        span(ra, a2id, 0, span_id="3" * 16),  # twice in the batch: duplicate
        span(ra, a1, 0, span_id="5" * 16),  # issued
    ]
    result = await store.add_many_spans(batch, assign_sequence_ids=[0, 2, 3, 5, 6])
    assert [o.status for o in result.outcomes] == [
        "stored", "stored", "stored", "duplicate", "stored", "duplicate", "stored",
    ]  # fmt: skip
    assert result.duplicate_count == 2 and len(result) == 5
    # Rollout a's counter was 1 (the stored span): the batch's three new spans of a get 2-4
    # in arrival order over both attempts (the duplicate's id is spent, never stored).
    got = {s.span_id: s.sequence_id for s in result}
    assert got["1" * 16] < got["3" * 16] < got["5" * 16]
    assert got["2" * 16] == 5 and got["4" * 16] == 3
    assert await store.get_next_span_sequence_id(rb, b1) == 6
    assert len(await store.query_spans(ra, attempt_id=a1)) == 3
    assert len(await store.query_spans(ra, attempt_id=a2id)) == 1
    assert len(await store.query_spans(rb)) == 2
    for rid, aid in ((ra, a1), (ra, a2id), (rb, b1)):
        attempt = next(x for x in await store.query_attempts(rid) if x.attempt_id == aid)
        assert attempt.last_heartbeat_time is not None, (rid, aid)


async def test_invalid_rollout_requests(store: LightningStore) -> None:
    with pytest.raises(InvalidRequestError, match="mode"):
        await store.enqueue_rollout(1, mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="mode"):
        await store.start_rollout(1, mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="max_attempts"):
        await store.enqueue_many_rollouts([{"input": 1, "config": {"max_attempts": 0}}])  # type: ignore[list-item]
    assert (await store.statistics())["total_rollouts"] == 0
