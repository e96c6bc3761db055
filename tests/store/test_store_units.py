"""Unit tests of the store's pure parts: lifecycle rules, query semantics, factory, models."""

from __future__ import annotations

import pytest

from lightspan.config import parse_config
from lightspan.store.api.base import AddSpansResult, SpanOutcome
from lightspan.store.api.models import (
    Attempt,
    AttemptedRollout,
    PaginatedResult,
    ProxyLLM,
    Rollout,
    RolloutConfig,
    Span,
    Worker,
    new_attempt_id,
    new_resources_id,
    new_rollout_id,
)
from lightspan.store.api.query import Cond, Query, run_query
from lightspan.store.backends.factory import create_store, open_store, store_from_config
from lightspan.store.backends.memory import InMemoryLightningStore
from lightspan.store.core import lifecycle as lc
from lightspan.store.intake.span_row import SpanRow


def _attempt(status: str, seq: int = 1, **kw) -> Attempt:
    return Attempt(
        rollout_id="ro-1",
        attempt_id="at-1",
        sequence_id=seq,
        start_time=100.0,
        status=status,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "status, seq, expected",
    [
        ("preparing", 1, "preparing"),
        ("running", 1, "running"),
        ("succeeded", 1, "succeeded"),
        ("failed", 1, "requeuing"),
        ("failed", 2, "failed"),
        ("timeout", 1, "requeuing"),
        ("unresponsive", 1, "failed"),
    ],
)
def test_rollout_status_from_attempt(status: str, seq: int, expected: str) -> None:
    cfg = RolloutConfig(max_attempts=2, retry_condition=["failed", "timeout"])
    assert lc.rollout_status_from_attempt(_attempt(status, seq), cfg) == expected


def test_health_verdict() -> None:
    cfg = RolloutConfig(timeout_seconds=10, unresponsive_seconds=5)
    r = Rollout(rollout_id="ro-1", input=None, start_time=0, config=cfg)
    assert lc.health_verdict(r, _attempt("running"), 104) is None
    assert lc.health_verdict(r, _attempt("running"), 106) == "unresponsive"
    assert lc.health_verdict(r, _attempt("running", last_heartbeat_time=105), 107) is None
    assert lc.health_verdict(r, _attempt("running", last_heartbeat_time=105), 111) == "timeout"


def test_worker_rules() -> None:
    w = Worker(worker_id="w")
    assert lc.worker_after_attempt(w, _attempt("running"), 1).status == "busy"
    assert lc.worker_after_attempt(w, _attempt("failed"), 1).status == "idle"
    after = lc.worker_after_attempt(w, _attempt("timeout"), 1, dequeue=True)
    assert after.status == "unknown" and after.last_dequeue_time == 1
    assert lc.worker_found_nothing(None, "w", 3).status == "idle"


def test_root_span_verdict() -> None:
    def s(parent: str | None, code: str, end: float | None = 1.0) -> SpanRow:
        return SpanRow.from_span(
            Span.build(
                rollout_id="r",
                attempt_id="a",
                sequence_id=1,
                name="x",
                parent_id=parent,
                status_code=code,
                end_time=end,
            )
        )  # type: ignore[arg-type]

    assert lc.root_span_verdict(s(None, "OK")) == "succeeded"
    assert lc.root_span_verdict(s(None, "UNSET")) == "succeeded"
    assert lc.root_span_verdict(s(None, "ERROR")) == "failed"
    assert lc.root_span_verdict(s("a" * 16, "ERROR")) is None
    assert lc.root_span_verdict(s(None, "OK", end=None)) is None


def test_query_semantics() -> None:
    items = [
        {"n": "b", "end_time": None},
        {"n": "a", "end_time": 2.0},
        {"n": None, "end_time": 1.0},
    ]
    get = dict.get
    page, total = run_query(items, Query(sort_by="n"), get)
    assert [i["n"] for i in page] == [None, "a", "b"] and total == 3
    page, _ = run_query(items, Query(sort_by="end_time"), get)  # null *_time = +infinity
    assert [i["end_time"] for i in page] == [1.0, 2.0, None]
    page, _ = run_query(items, Query(sort_by="end_time", sort_order="desc"), get)
    assert [i["end_time"] for i in page] == [None, 2.0, 1.0]
    q = Query(conds=[Cond("n", "exact", "a"), Cond("n", "contains", "b")], logic="or")
    assert [i["n"] for i in run_query(items, q, get)[0]] == ["b", "a"]
    q = Query(conds=[Cond("n", "within", [])])
    assert run_query(items, q, get) == ([], 0)


def test_ids_and_models() -> None:
    assert new_rollout_id().startswith("ro-") and len(new_rollout_id()) == 15
    assert new_attempt_id().startswith("at-") and len(new_attempt_id()) == 11
    assert new_resources_id().startswith("rs-") and len(new_resources_id()) == 15
    with pytest.raises(ValueError, match="belongs to rollout"):
        AttemptedRollout(
            rollout_id="ro-1",
            input=None,
            start_time=0,
            attempt=_attempt("running").model_copy(update={"rollout_id": "ro-2"}),
        )
    p = PaginatedResult[int](items=[1, 2], limit=-1, offset=0, total=2)
    assert list(p) == [1, 2] and len(p) == 2 and p[1] == 2
    llm = ProxyLLM(endpoint="http://h:1/v1", model="m")
    assert llm.get_base_url("ro-1", "at-1") == "http://h:1/rollout/ro-1/attempt/at-1/v1"
    s = Span.build(rollout_id="r", attempt_id="a", sequence_id=1, name="x")
    row = SpanRow.from_span(s)
    res = AddSpansResult([SpanOutcome("stored", row), SpanOutcome("rejected", row, "why")])
    assert list(res) == [s] and res.rejected_count == 1 and res.rejection_message == "why (1 span)"


async def test_factory(tmp_path) -> None:
    assert isinstance(create_store("in_memory"), InMemoryLightningStore)
    with pytest.raises(ValueError, match="unknown store backend 'mongo'"):
        create_store("mongo")
    with pytest.raises(ValueError, match="database file path"):
        create_store("sqlite")
    with pytest.raises(ValueError, match="connection string"):
        create_store("postgres")
    store = await open_store("sqlite", db=str(tmp_path / "s.db"), scan_interval=0)
    try:
        assert (await store.statistics())["total_rollouts"] == 0
    finally:
        await store.close()
    cfg = parse_config({"agentLightning": {"store": {"type": "in_memory"}}}, environ={})
    assert isinstance(store_from_config(cfg), InMemoryLightningStore)
    with pytest.raises(ValueError, match="HTTP client"):
        store_from_config(parse_config({}, environ={}))


def test_the_server_keeps_freed_memory_for_reuse_on_glibc() -> None:
    import platform

    from lightspan.store.server.app import _tune_malloc

    applied = _tune_malloc()
    assert applied == (platform.libc_ver()[0] == "glibc")
