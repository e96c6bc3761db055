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
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from .core import DEFAULT_AUTO_ROLLOUT_TIMEOUT, CoreStore
from .span_chunks import SpanKeyCache
from .sql import Dialect, SqlTx, schema

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
    ) -> None:
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
        self._open_lock = asyncio.Lock()
        self._span_keys = SpanKeyCache()
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
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError(f"SQLite store {self.path} is closed")
            await conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            tx = SqlTx(conn, SQLITE, self._span_keys)
            conn.inline = write
            try:
                yield tx
            except BaseException:
                conn.inline = False
                await conn.execute("ROLLBACK")
                raise
            conn.inline = False
            await conn.execute("COMMIT")
            tx.committed()
