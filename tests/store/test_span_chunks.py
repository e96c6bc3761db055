"""Span chunks (``span_chunks.py``): what the SQL backends must get right beyond the conformance
suite: duplicates seen by another process or server, a rolled-back transaction never taking span
ids with it, reads in and out of sequence order (both read paths), and databases written before
chunks existed."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from lightspan.store import LightningStore, Span
from lightspan.store.backends import span_chunks
from lightspan.store.backends.factory import create_store
from lightspan.store.backends.memory import InMemoryLightningStore
from lightspan.store.backends.span_chunks import SpanKeyCache
from lightspan.store.backends.sqlite import SqliteLightningStore
from lightspan.store.intake.span_row import SpanRow
from tests.store.test_conformance import span

SQL_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
MakeStore = Callable[..., Awaitable[LightningStore]]


@pytest.fixture(params=SQL_BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Started stores of one SQL backend, all on one database (like two server processes)."""
    location: dict[str, Any] = {}
    if request.param == "sqlite":
        location["path"] = str(tmp_path / "store.db")
    else:
        location["dsn"] = request.getfixturevalue("postgres_db_dsn")
    opened: list[LightningStore] = []

    async def make(**options: Any) -> LightningStore:
        store = create_store(request.param, scan_interval=0, **location, **options)
        await store.start()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def test_duplicates_written_by_another_process_are_found(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()  # two processes: two span-id caches
    ar = await a.start_rollout(1)
    rid, aid = ar.rollout_id, ar.attempt.attempt_id
    first = [span(rid, aid, i, span_id=f"{i:016x}") for i in range(1, 6)]
    assert (await a.add_many_spans(first[:3])).duplicate_count == 0
    # b has cached this attempt before a wrote more: its watermark must catch up.
    assert (await b.add_many_spans(first[2:4])).duplicate_count == 1
    assert (await a.add_many_spans(first)).duplicate_count == 4
    assert [s.span_id for s in await b.query_spans(rid)] == [s.span_id for s in first]
    assert (await a.statistics())["total_spans"] == 5


async def test_a_rolled_back_transaction_leaves_no_span_ids_behind(make_store: MakeStore) -> None:
    store = await make_store()
    ar = await store.start_rollout(1)
    rid, aid = ar.rollout_id, ar.attempt.attempt_id
    spans = [span(rid, aid, i, span_id=f"{i:016x}") for i in range(1, 4)]

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store._tx(write=True) as tx:  # type: ignore[attr-defined]
            rows = [SpanRow.from_span(s) for s in spans]  # what backends are given
            assert len((await tx.insert_spans({(rid, aid): rows[:2]}))[(rid, aid)]) == 2
            # A second batch of the same attempt in the same transaction (group commit) sees
            # the first as duplicates, without taking its uncommitted chunk into the cache.
            assert len((await tx.insert_spans({(rid, aid): rows}))[(rid, aid)]) == 1
            raise Boom
    # Had the ids been cached before the commit, these would now count as duplicates: lost.
    result = await store.add_many_spans(spans)
    assert result.duplicate_count == 0 and len(await store.query_spans(rid)) == 3


def _shuffled_spans(rid: str, aid: str, n: int) -> list[Span]:
    rng = random.Random(7)
    seqs = list(range(1, n + 1))
    rng.shuffle(seqs)
    return [
        span(rid, aid, seq, name=rng.choice(["llm", "tool", "step"]), span_id=f"{seq:016x}")
        for seq in seqs
    ]


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "out-of-order"])
async def test_reads_agree_with_the_in_memory_store(make_store: MakeStore, shuffled: bool) -> None:
    """Every sort and page over spans stored in many chunks, in and out of sequence order
    (the fast path skips parsing ``cols`` only when chunks are in order)."""
    sql, mem = await make_store(), InMemoryLightningStore(scan_interval=0)
    await mem.start()
    try:
        results = []
        for store in (sql, mem):
            ar = await store.start_rollout(1)
            rid, aid = ar.rollout_id, ar.attempt.attempt_id
            spans = _shuffled_spans("ro", "at", 60)
            if not shuffled:
                spans.sort(key=lambda s: s.sequence_id)
            for i in range(0, 60, 7):  # chunks of 7
                batch = [
                    s.model_copy(update={"rollout_id": rid, "attempt_id": aid})
                    for s in spans[i : i + 7]
                ]
                await store.add_many_spans(batch)
            out = []
            for kw in (
                {},
                {"limit": 10, "offset": 5},
                {"limit": 10, "offset": 55},
                {"offset": 13},
                {"sort_by": "sequence_id", "sort_order": "desc", "limit": 9},
                {"sort_by": "name", "limit": 20, "offset": 3},
                {"sort_by": None},
                {"name": "llm", "limit": 5},
            ):
                docs, total = await store.query_spans_json(rid, **kw)
                out.append(([d.split('"sequence_id":')[1][:4] for d in docs], total))
            results.append(out)
        assert results[0] == results[1]
    finally:
        await mem.close()


async def _rollout_and_spans(store: LightningStore, n: int) -> tuple[str, list[Span]]:
    """A rollout created in ``store`` (then closed) and ``n`` spans for it, not stored: what an
    old database held in ``ls_spans``."""
    await store.start()
    ar = await store.start_rollout(1)
    await store.close()
    rid, aid = ar.rollout_id, ar.attempt.attempt_id
    return rid, [span(rid, aid, i, span_id=f"{i:016x}") for i in range(1, n + 1)]


async def test_spans_of_a_database_from_before_chunks_are_moved(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    rid, spans = await _rollout_and_spans(SqliteLightningStore(path, scan_interval=0), 7)
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE ls_spans (ins_seq INTEGER PRIMARY KEY, rollout_id TEXT, attempt_id TEXT, "
        "span_id TEXT, sequence_id INTEGER, trace_id TEXT, parent_id TEXT, name TEXT, "
        "start_time REAL, end_time REAL, doc TEXT NOT NULL)"
    )
    conn.executemany(
        "INSERT INTO ls_spans (rollout_id, attempt_id, span_id, sequence_id, doc) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            (s.rollout_id, s.attempt_id, s.span_id, s.sequence_id, s.model_dump_json())
            for s in spans
        ],
    )
    conn.commit()
    conn.close()
    store = SqliteLightningStore(path, scan_interval=0)
    await store.start()
    try:
        assert [s.model_dump_json() for s in await store.query_spans(rid)] == [
            s.model_dump_json() for s in spans
        ]
        assert (await store.add_many_spans(spans[:2])).duplicate_count == 2
        assert (await store.statistics())["total_spans"] == 7
    finally:
        await store.close()
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert ("ls_spans",) not in tables


@pytest.fixture(params=["native", "python"])
def id_sets(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with the native ``SpanIdSet`` (when built) and with Python sets."""
    if request.param == "native" and span_chunks._SpanIdSet is None:
        pytest.skip("the Rust extension is not built")
    if request.param == "python":
        monkeypatch.setattr(span_chunks, "_SpanIdSet", None)
    return str(request.param)


def _ids(known: Any) -> set[str]:
    return known if isinstance(known, set) else known.to_set()


# Hex span ids as OTLP writes them, an upper-case one (another string: another span) and
# ids of other shapes, which the native set keeps as strings.
A, A_UPPER, B = "00000000000000ff", "00000000000000FF", "0123456789abcdef"


def test_the_span_id_cache_is_bounded_and_evicts_whole_attempts(id_sets: str) -> None:
    cache = SpanKeyCache(max_spans=6)
    cache.add(("r", "a1"), 1, {A, "y"})
    cache.add(("r", "a2"), 2, {"p", B})
    known = cache.add(("r", "a1"), 3, {A_UPPER, A})  # grown in place, counted
    assert _ids(known) == {A, "y", A_UPPER} and len(known) == 3 and len(cache) == 5
    assert A in known and A_UPPER in known and B not in known and 255 not in known
    assert (type(known) is set) == (id_sets == "python")
    cache.add(("r", "a3"), 4, {"m", "n"})  # 7 > 6: a2, the least recently used, goes
    assert cache.get(("r", "a2")) is None and len(cache) == 5
    cache.merge(("r", "a1"), 5, {"w"})
    watermark, known = cache.get(("r", "a1"))
    assert watermark == 5 and _ids(known) == {"w", A, A_UPPER, "y"}
    cache.merge(("r", "a1"), 2, {"old"})  # an older chunk never rewinds the watermark
    assert "old" not in cache.get(("r", "a1"))[1]
    cache.merge(("r", "gone"), 9, {"k"})  # not cached: read from the chunks when needed
    assert cache.get(("r", "gone")) is None and len(cache) == 6


@pytest.mark.postgres
async def test_servers_starting_together_move_old_postgres_spans_once(postgres_db_dsn: str) -> None:
    import asyncio

    import psycopg

    from lightspan.store.backends.postgres import PostgresLightningStore

    first = PostgresLightningStore(postgres_db_dsn, scan_interval=0)
    rid, spans = await _rollout_and_spans(first, 5)
    async with await psycopg.AsyncConnection.connect(postgres_db_dsn) as conn:
        await conn.execute(
            "CREATE TABLE ls_spans (ins_seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "rollout_id TEXT, attempt_id TEXT, span_id TEXT, doc TEXT NOT NULL)"
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO ls_spans (rollout_id, attempt_id, span_id, doc) VALUES (%s, %s, %s, %s)",
                [(s.rollout_id, s.attempt_id, s.span_id, s.model_dump_json()) for s in spans],
            )
        await conn.commit()
    stores = [PostgresLightningStore(postgres_db_dsn, scan_interval=0) for _ in range(3)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        got = await stores[0].query_spans(rid)
        assert [s.span_id for s in got] == [s.span_id for s in spans]
        assert (await stores[1].statistics())["total_spans"] == 5
    finally:
        for s in stores:
            await s.close()


def test_the_default_span_id_cache_stays_within_its_memory_budget(id_sets: str) -> None:
    """Filled far past its bound with soak-like traffic (50 random span ids per new attempt),
    the default cache holds at most its bound and under 48 MB (the server's RSS levels off):
    2,000,000 ids in native sets (measured ~42 MB), 250,000 in Python sets (~31 MB)."""
    import os

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    default = 2_000_000 if id_sets == "native" else 250_000
    cache = SpanKeyCache(default)
    before = rss()
    for a in range(cache.max_spans // 50 * 2):
        cache.add((f"ro-live-{a}", "at-1"), a, [os.urandom(8).hex() for _ in range(50)])
    grown = rss() - before
    assert cache.max_spans // 50 <= len(cache._entries) and len(cache) <= cache.max_spans
    assert grown < 48 * 2**20, grown
    if id_sets == "native":  # the module's default is the native one's
        assert span_chunks.DEFAULT_SPAN_ID_CACHE == default


@pytest.mark.parametrize("bound", [100, 40])
async def test_the_span_id_cache_bound_decides_whether_batches_re_read_their_attempts(
    tmp_path: Path, bound: int, id_sets: str
) -> None:
    """Three attempts receiving 6 spans per batch in turn, 90 ids in all: a bound that holds
    them all reads no attempt back; a smaller one makes the attempts evict each other, so
    batches read their attempt's stored ids back (the cliff in docs/store.md, counted for
    ``/metrics``); duplicates are found either way."""
    store = create_store("sqlite", db=str(tmp_path / "s.db"), scan_interval=0, span_id_cache=bound)
    await store.start()
    try:
        attempts = [await store.start_rollout(i) for i in range(3)]
        batches = []
        for turn in range(5):
            for k, ar in enumerate(attempts):
                rid, aid = ar.rollout_id, ar.attempt.attempt_id
                ids = range(turn * 6 + 1, turn * 6 + 7)
                batch = [span(rid, aid, i, span_id=f"{k:04x}{i:012x}") for i in ids]
                batches.append(batch)
                assert (await store.add_many_spans(batch)).duplicate_count == 0
        cache = store.span_id_cache  # type: ignore[attr-defined]
        assert cache.max_spans == bound
        if bound >= 90:
            assert cache.ids_reread == 0
        else:
            # Once the attempts outgrow the bound, batches find their attempt evicted and read
            # it back whole: more ids read back than were ever stored (90).
            assert cache.ids_reread > 90
        assert (await store.add_many_spans(batches[0])).duplicate_count == 6
        assert (await store.statistics())["total_spans"] == 90
    finally:
        await store.close()


def test_the_span_id_cache_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="span_id_cache must be a positive integer, got 0"):
        SpanKeyCache(0)
