"""PostgreSQL LightningStore: for teams that outgrow one machine.

Why PostgreSQL and how it stays correct with several store servers on one database (behind a
load balancer): every call is one transaction (READ COMMITTED) that first locks the rows of the
rollouts it changes (``SELECT ... FOR UPDATE``, in rollout-id order, so two servers cannot
deadlock), and dequeue claims rows with ``FOR UPDATE SKIP LOCKED``, so concurrent dequeuers on
any server skip each other's claims and no rollout is handed to two workers. A call returns
after its commit, so acknowledged spans are durable.

Needs the ``postgres`` extra (``psycopg[binary]`` and ``psycopg-pool``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from lightspan.store.backends.span_chunks import DEFAULT_SPAN_ID_CACHE, SpanKeyCache
from lightspan.store.backends.sql import Dialect, SqlTx, schema
from lightspan.store.core.store import DEFAULT_AUTO_ROLLOUT_TIMEOUT, CoreStore

POSTGRES = Dialect(
    name="postgres",
    text='TEXT COLLATE "C"',  # byte order, as Python and SQLite sort strings
    real="DOUBLE PRECISION",
    bigint="BIGINT",
    identity="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    contains_fn="strpos",
    greatest_fn="GREATEST",
    next_queue_seq="nextval('ls_queue_seq')",
    next_write_seq="nextval('ls_write_seq')",
    no_limit="ALL",
    config_number="CAST(CAST(r.doc AS jsonb) -> 'config' ->> '{key}' AS DOUBLE PRECISION)",
)
_SCHEMA_LOCK_KEY = 0x6C73_7374  # advisory lock id ("lsst"): one server creates the schema
_PLACEHOLDER = re.compile(r"\?")


def _pg(sql: str) -> str:
    """``?`` placeholders (the SQL layer's) -> psycopg's ``%s`` (the SQL has no literal ``%``)."""
    return _PLACEHOLDER.sub("%s", sql)


class _PgConn:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = await self._conn.execute(_pg(sql), list(params), prepare=False)
        return await cur.fetchall()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._conn.execute(_pg(sql), list(params))

    async def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        async with self._conn.cursor() as cur:
            await cur.executemany(_pg(sql), rows)


class PostgresLightningStore(CoreStore):
    """LightningStore in the PostgreSQL database at ``dsn`` (schema created if missing)."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
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
        self.dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None
        self._span_keys = SpanKeyCache(span_id_cache)

    @property
    def span_id_cache(self) -> SpanKeyCache:
        """The span ids kept for the duplicate check (size, bound, ids read back: the
        server's ``/metrics``)."""
        return self._span_keys

    async def _open(self) -> None:
        if self._pool is not None:
            return
        try:
            from psycopg_pool import AsyncConnectionPool
        except ImportError as e:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "the postgres store backend needs the 'postgres' extra: "
                "pip install 'lightspan[postgres]'"
            ) from e
        pool = AsyncConnectionPool(
            self.dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=30)
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK_KEY])
                await conn.execute("CREATE SEQUENCE IF NOT EXISTS ls_queue_seq")
                await conn.execute("CREATE SEQUENCE IF NOT EXISTS ls_write_seq")
                for stmt in schema(POSTGRES):
                    await conn.execute(stmt)
                # Under the same lock: servers starting together move old spans once.
                tx = SqlTx(_PgConn(conn), POSTGRES, self._span_keys)
                await tx.migrate_legacy_spans()
                await tx.migrate_health_due()
        except Exception as e:
            await pool.close()
            raise RuntimeError(f"cannot open PostgreSQL store: {e}") from e
        self._pool = pool

    async def _close_backend(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[SqlTx]:
        if self._pool is None:
            await self._open()
        async with self._pool.connection() as conn:
            tx = SqlTx(_PgConn(conn), POSTGRES, self._span_keys)
            async with conn.transaction():
                yield tx
                await tx.flush()
            tx.committed()
