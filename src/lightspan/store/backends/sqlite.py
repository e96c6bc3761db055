"""SQLite LightningStore: one database file, the embedded default of ``lightspan store serve``.

Why the stdlib ``sqlite3`` with one dedicated thread (not aiosqlite): each store call is one
transaction of a few statements. What can wait (``BEGIN IMMEDIATE`` on another process's write
lock, ``COMMIT`` on the disk's fsync, read transactions) runs on the thread that owns the
connection, so the event loop never blocks on the disk or on another process. Statements *inside*
a write transaction run inline on the loop: the write lock is held, so they cannot wait on
anyone, and they take tens to hundreds of microseconds, less than a thread hop on the virtual
machines we measure on (~15 hops per span batch cost more than the statements themselves).

Guarantees:

* WAL mode: readers never block the writer; readers in other processes see committed data.
* Every write transaction starts with ``BEGIN IMMEDIATE``, which takes SQLite's single write
  lock up front (waiting up to ``busy_timeout`` seconds for it). So read-then-write sequences
  such as dequeue are serialized across processes: no rollout is handed to two workers.
* ``synchronous=FULL`` (default): a call returns only after its commit is in the WAL on disk,
  so an acknowledged span batch survives a crash of the process *and* of the machine.
  ``synchronous="NORMAL"`` survives process crashes (SIGKILL) only, and is faster.
* Group commit: write calls that arrive while another one holds the connection (concurrent
  workers, concurrent HTTP requests) share its transaction's single COMMIT, and so its fsync:
  each call's statements run in their own ``SAVEPOINT`` (a call that fails rolls back only its
  own changes, the others commit), and each call returns only after that COMMIT is on disk, so
  the guarantee above holds per call. A lone call commits at once (no added wait). A COMMIT
  that fails fails every call of the group. Reads see committed data only: a read that finds a
  group open commits it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lightspan.store.backends.span_chunks import DEFAULT_SPAN_ID_CACHE, SpanKeyCache
from lightspan.store.backends.sql import Dialect, SqlTx, schema
from lightspan.store.core.store import DEFAULT_AUTO_ROLLOUT_TIMEOUT, CoreStore

T = TypeVar("T")

SQLITE = Dialect(
    name="sqlite",
    text="TEXT",
    real="REAL",
    bigint="INTEGER",
    # A rowid alias: rows are never deleted, so ids only grow.
    identity="INTEGER PRIMARY KEY",
    for_update="",
    skip_locked="",
    contains_fn="instr",
    greatest_fn="max",
    next_queue_seq="(SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM ls_rollouts)",
    next_write_seq="(SELECT COALESCE(MAX(write_seq), 0) + 1 FROM ls_resources)",
    no_limit="-1",
    config_number="json_extract(r.doc, '$.config.{key}')",
)


class _SqliteConn:
    """Runs statements on the connection's own thread."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor
        self.inline = False  # True while a write transaction holds the lock (module doc)

    async def run(self, fn: Callable[[], T]) -> T:
        if self.inline:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self.run(lambda: self._conn.execute(sql, params).fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self.run(lambda: self._conn.execute(sql, params))

    async def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        await self.run(lambda: self._conn.executemany(sql, rows))


class SqliteLightningStore(CoreStore):
    """LightningStore in the SQLite file ``path`` (created with its schema if missing)."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        scan_interval: float = 5.0,
        auto_register_rollouts: bool = True,
        auto_rollout_timeout: float | None = DEFAULT_AUTO_ROLLOUT_TIMEOUT,
        wait_poll_interval: float = 0.2,
        span_id_cache: int = DEFAULT_SPAN_ID_CACHE,
    ) -> None:
        """``span_id_cache``: span ids kept in memory for the duplicate check (``SpanKeyCache``;
        it must hold the ids of every attempt receiving spans)."""
        super().__init__(
            scan_interval=scan_interval,
            auto_register_rollouts=auto_register_rollouts,
            auto_rollout_timeout=auto_rollout_timeout,
            wait_poll_interval=wait_poll_interval,
        )
        self.group_commit = True
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self.path = Path(path)
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: _SqliteConn | None = None
        self._raw: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._group: _Group | None = None
        self.write_commits = 0
        """Write transactions committed (each one fsync with synchronous=FULL)."""
        self._open_lock = asyncio.Lock()
        self._span_keys = SpanKeyCache(span_id_cache)
        self._scan_conn: tuple[_SqliteConn, sqlite3.Connection, ThreadPoolExecutor] | None = None
        self._scan_lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path),
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
        )
        # 16 KiB pages suit ~1 KB span rows (measured: ~25% less CPU per inserted span than
        # 4 KiB). Only takes effect when the file is new (before WAL mode is set).
        conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache
        # Checkpoint the WAL into the database every ~40 MB rather than every 16 MB: fewer,
        # larger checkpoints cost less per span.
        conn.execute("PRAGMA wal_autocheckpoint=2500")  # pages of 16 KiB
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in schema(SQLITE):
                conn.execute(stmt)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return conn

    @property
    def span_id_cache(self) -> SpanKeyCache:
        """The span ids kept for the duplicate check (size, bound, ids read back: the
        server's ``/metrics``)."""
        return self._span_keys

    async def _open(self) -> None:
        async with self._open_lock:
            if self._conn is not None:
                return
            executor = ThreadPoolExecutor(1, thread_name_prefix="lightspan-sqlite")
            try:
                raw = await asyncio.get_running_loop().run_in_executor(executor, self._connect)
            except sqlite3.Error as e:
                executor.shutdown(wait=False)
                raise RuntimeError(f"cannot open SQLite store {self.path}: {e}") from e
            self._executor, self._raw = executor, raw
            self._conn = _SqliteConn(raw, executor)
        async with self._tx(write=True) as tx:
            await tx.migrate_legacy_spans()
            await tx.migrate_health_due()

    @asynccontextmanager
    async def _scan_tx(self) -> AsyncIterator[SqlTx]:
        """A read transaction on a second connection with its own thread: the health scan's
        query runs beside ingestion, not behind the store's lock (in WAL mode a reader and the
        writer never wait on each other)."""
        if self._conn is None:
            await self._open()
        async with self._scan_lock:
            if self._scan_conn is None:
                executor = ThreadPoolExecutor(1, thread_name_prefix="lightspan-sqlite-scan")
                raw = await asyncio.get_running_loop().run_in_executor(
                    executor,
                    lambda: sqlite3.connect(
                        str(self.path),
                        timeout=self._busy_timeout,
                        isolation_level=None,
                        check_same_thread=False,
                    ),
                )
                self._scan_conn = (_SqliteConn(raw, executor), raw, executor)
            conn = self._scan_conn[0]
            await conn.execute("BEGIN")
            try:
                yield SqlTx(conn, SQLITE, SpanKeyCache())
            finally:
                await conn.execute("COMMIT")

    async def _close_backend(self) -> None:
        async with self._scan_lock:
            scan, self._scan_conn = self._scan_conn, None
            if scan is not None:
                await scan[0].run(scan[1].close)
                scan[2].shutdown(wait=True)
        async with self._lock:
            await self._commit_group_locked()
            conn, raw, executor = self._conn, self._raw, self._executor
            self._conn = self._raw = self._executor = None
            if conn is not None and raw is not None:
                await conn.run(raw.close)
            if executor is not None:
                executor.shutdown(wait=True)

    @asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[SqlTx]:
        if self._conn is None:
            await self._open()
        if write:
            async with self._group_tx() as tx:
                yield tx
            return
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError(f"SQLite store {self.path} is closed")
            # Readers see committed data only: an open group commits before the read starts.
            await self._commit_group_locked()
            await conn.execute("BEGIN")
            tx = SqlTx(conn, SQLITE, self._span_keys)
            try:
                yield tx
                await tx.flush()
            finally:
                await conn.execute("COMMIT")

    @asynccontextmanager
    async def _group_tx(self) -> AsyncIterator[SqlTx]:
        """A write transaction that shares its COMMIT (its fsync) with the write transactions
        that queued behind it (group commit; module doc). Each caller's statements run in their
        own SAVEPOINT, so a caller that fails rolls back only its own changes; every caller
        returns only after the COMMIT holding its changes is on disk, and raises if it failed."""
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError(f"SQLite store {self.path} is closed")
            if self._group is not None and (
                self._group.broken is not None or not (self._raw and self._raw.in_transaction)
            ):
                await self._commit_group_locked()  # fails the broken group's callers
            group = self._group
            if group is None:
                if not self._begin_now():
                    await conn.execute("BEGIN IMMEDIATE")  # wait for the lock off the loop
                group = self._group = _Group(asyncio.get_running_loop().create_future())
                # Queued on the lock behind every caller already waiting: they join this group.
                group.committer = asyncio.create_task(self._commit_group(group))
            tx = SqlTx(conn, SQLITE, self._span_keys)
            conn.inline = True
            try:
                await conn.execute("SAVEPOINT ls_member")
                try:
                    yield tx
                    await tx.flush()
                except BaseException:
                    self._rollback_member(group)
                    raise
                try:
                    await conn.execute("RELEASE ls_member")
                except BaseException as e:
                    group.broken = e
                    raise
            finally:
                conn.inline = False
            group.members.append(tx)
        await asyncio.shield(group.done)

    def _begin_now(self) -> bool:
        """``BEGIN IMMEDIATE`` on the loop if the write lock is free (the common case: a thread
        hop costs more than the statement); False if another connection holds it."""
        raw = self._raw
        assert raw is not None
        raw.execute("PRAGMA busy_timeout=0")
        try:
            raw.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                return False
            raise
        finally:
            raw.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")

    def _rollback_member(self, group: _Group) -> None:
        raw = self._raw
        try:
            assert raw is not None
            if not raw.in_transaction:  # SQLite rolled the whole transaction back itself
                raise sqlite3.OperationalError("the transaction was rolled back by SQLite")
            raw.execute("ROLLBACK TO ls_member")
            raw.execute("RELEASE ls_member")
        except (sqlite3.Error, AssertionError) as e:
            group.broken = e  # the group's other changes cannot be trusted: fail them all

    async def _commit_group(self, group: _Group) -> None:
        # A few loop turns first: calls already on their way (a task just created, a request
        # just read) join this group rather than wait a whole fsync for the next one.
        for _ in range(_JOIN_TURNS):
            await asyncio.sleep(0)
        async with self._lock:
            if self._group is group:
                await self._commit_group_locked()

    async def _commit_group_locked(self) -> None:
        """COMMIT the open group, if any (the lock is held), and tell its callers."""
        group, self._group = self._group, None
        if group is None:
            return
        conn, raw = self._conn, self._raw
        try:
            if group.broken is not None:
                raise group.broken
            if raw is None or not raw.in_transaction:
                raise sqlite3.OperationalError("the transaction was rolled back by SQLite")
            assert conn is not None
            await conn.execute("COMMIT")
        except BaseException as e:
            if raw is not None and raw.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    raw.execute("ROLLBACK")
            # Members may have cached span ids of chunks that are now rolled back.
            self._span_keys.clear()
            if not group.done.done():
                group.done.set_exception(
                    e if isinstance(e, Exception) else RuntimeError(f"commit interrupted: {e!r}")
                )
            if not isinstance(e, Exception):
                raise
            return
        self.write_commits += 1
        for tx in group.members:
            tx.committed()
        if not group.done.done():
            group.done.set_result(None)


_JOIN_TURNS = 3


@dataclass
class _Group:
    """Write transactions sharing one COMMIT."""

    done: asyncio.Future[None]
    members: list[SqlTx] = field(default_factory=list)
    broken: BaseException | None = None
    committer: asyncio.Task[None] | None = None
