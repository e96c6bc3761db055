"""Due times of the health scan (``ls_attempts.due_at``) beyond the conformance suite: a
database written before they existed gets them on open (SQLite, and PostgreSQL with several
servers opening it at once), computed from its stored rows, and the scan reads the due ones
through the index, not every running rollout."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from lightspan.store import RolloutConfig
from lightspan.store.backends.factory import create_store
from lightspan.store.backends.sql import HEALTH_DUE_SQL
from lightspan.store.backends.sqlite import SqliteLightningStore
from tests.store.test_conformance import span

_DROP = [
    "DROP INDEX ls_attempts_due",
    "ALTER TABLE ls_attempts DROP COLUMN due_at",
    "ALTER TABLE ls_rollouts DROP COLUMN timeout_seconds",
    "ALTER TABLE ls_rollouts DROP COLUMN unresponsive_seconds",
]


async def _population(store: Any) -> dict[str, str]:
    """Rollouts whose due times the migration must compute: due by timeout, due by lack of a
    heartbeat, idle within its limits, without limits, finished, and a second attempt."""
    ids = {}
    ids["late"] = (
        await store.start_rollout(1, config=RolloutConfig(timeout_seconds=0.2))
    ).rollout_id
    silent = await store.start_rollout(2, config=RolloutConfig(unresponsive_seconds=0.2))
    ids["silent"] = silent.rollout_id
    ids["idle"] = (
        await store.start_rollout(3, config=RolloutConfig(timeout_seconds=3600))
    ).rollout_id
    ids["free"] = (await store.start_rollout(4)).rollout_id
    done = await store.start_rollout(5, config=RolloutConfig(timeout_seconds=0.1))
    await store.update_attempt(done.rollout_id, "latest", status="succeeded")
    ids["done"] = done.rollout_id
    retried = await store.start_rollout(6, config=RolloutConfig(unresponsive_seconds=0.2))
    await store.start_attempt(retried.rollout_id)
    ids["retried"] = retried.rollout_id
    await store.add_span(span("ro-auto", "at-1", 1, start_time=time.time()))  # auto, 3600 s
    ids["auto"] = "ro-auto"
    return ids


async def _check_migrated(store: Any, ids: dict[str, str]) -> None:
    await asyncio.sleep(0.3)
    async with store._tx(write=False) as tx:
        due = await tx.health_due(time.time())
    assert due == sorted([ids["late"], ids["silent"], ids["retried"]])
    changed = await store.scan_health()
    assert sorted((a.rollout_id, a.status) for a in changed) == sorted(
        [
            (ids["late"], "timeout"),
            (ids["silent"], "unresponsive"),
            (ids["retried"], "unresponsive"),
        ]
    )
    async with store._tx(write=False) as tx:
        assert await tx.health_due(time.time()) == []
        assert await tx.health_due(time.time() + 4000) == sorted([ids["idle"], ids["auto"]])


async def test_an_sqlite_database_from_before_due_times_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SqliteLightningStore(path, scan_interval=0)
    await store.start()
    ids = await _population(store)
    await store.close()
    conn = sqlite3.connect(path)
    for stmt in _DROP:
        conn.execute(stmt)
    conn.commit()
    conn.close()
    store = SqliteLightningStore(path, scan_interval=0)
    await store.start()
    try:
        await _check_migrated(store, ids)
    finally:
        await store.close()


@pytest.mark.postgres
async def test_servers_opening_an_old_postgres_database_together_migrate_it_once(
    postgres_db_dsn: str,
) -> None:
    import psycopg

    first = create_store("postgres", dsn=postgres_db_dsn, scan_interval=0)
    await first.start()
    ids = await _population(first)
    await first.close()
    async with await psycopg.AsyncConnection.connect(postgres_db_dsn) as conn:
        for stmt in _DROP:
            await conn.execute(stmt)
        await conn.commit()
    stores = [create_store("postgres", dsn=postgres_db_dsn, scan_interval=0) for _ in range(3)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        await _check_migrated(stores[0], ids)
    finally:
        for s in stores:
            await s.close()


async def test_the_scan_reads_due_rows_through_the_index(tmp_path: Path) -> None:
    """SQLite's plan for the candidate query searches the partial index on ``due_at`` (cost
    proportional to the rows due), it does not scan a table."""
    store = SqliteLightningStore(tmp_path / "s.db", scan_interval=0)
    await store.start()
    try:
        async with store._tx(write=False) as tx:
            plan = await tx.c.fetchall(f"EXPLAIN QUERY PLAN {HEALTH_DUE_SQL}", [time.time()])
        details = " ".join(str(row[-1]) for row in plan)
        assert "ls_attempts_due" in details and "SCAN ls_attempts" not in details, details
    finally:
        await store.close()


def test_the_due_time_is_when_the_verdict_first_says_yes() -> None:
    """``health_due_time`` against ``health_verdict`` on seeded random attempts and limits,
    with times of today's magnitude (where float rounding shows): the verdict is ``None``
    before the due time and set just after it, and ``None`` forever when there is no due
    time; the scan's slack covers any rounding at the boundary."""
    import random

    from lightspan.store.api.models import Attempt, Rollout
    from lightspan.store.core import lifecycle as lc

    rng = random.Random(7)
    for _ in range(5000):
        start = time.time() + rng.uniform(-1e5, 1e5)
        hb = rng.choice([None, 0.0, start + rng.uniform(0, 500)])
        timeout = rng.choice([None, 0.0, rng.uniform(0, 300), 3600.0])
        unresponsive = rng.choice([None, rng.uniform(0, 60)])
        status = rng.choice(["running", "preparing", "succeeded", "queuing"])
        rollout = Rollout(
            rollout_id="ro-1",
            input=None,
            start_time=start,
            status=status,  # type: ignore[arg-type]
            config=RolloutConfig(timeout_seconds=timeout, unresponsive_seconds=unresponsive),
        )
        attempt = Attempt(
            rollout_id="ro-1",
            attempt_id="at-1",
            sequence_id=1,
            start_time=start,
            last_heartbeat_time=hb,
            status="running",
        )
        due = lc.health_due_time(status, timeout, unresponsive, attempt)
        if due is None:
            assert status not in ("running", "preparing") or (timeout, unresponsive) == (None,) * 2
            continue
        assert lc.health_verdict(rollout, attempt, due + 1e-3) is not None
        assert lc.health_verdict(rollout, attempt, due - 1e-3) is None
        # The boundary itself: a verdict there is always within the scan's slack.
        for now in (due, math.nextafter(due, math.inf), math.nextafter(due, -math.inf)):
            if lc.health_verdict(rollout, attempt, now) is not None:
                assert due <= now + lc.HEALTH_DUE_SLACK
