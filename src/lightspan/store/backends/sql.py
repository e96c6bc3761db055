"""The storage primitives of ``tx.py`` in SQL, shared by the SQLite and PostgreSQL backends.

Why one SQL layer: both databases speak the same SQL for everything the store needs
(``ON CONFLICT``, ``RETURNING``, partial indexes, ``NULLS FIRST/LAST``); the few differences
(placeholders, identity columns, row locks, substring search, sequences) live in
:class:`Dialect`.

Layout: each record is one row holding the whole model as JSON text (``doc``) plus copies of the
fields queries filter or sort on, each in its own indexed-as-needed column. ``ins_seq`` (an
identity column) is the insertion order used when no sort is asked and to break ties. A rollout
is queued while ``queue_seq`` is not null; ``queue_seq`` orders the queue.

Spans are the exception: they are kept in *chunks*, one row per stored batch and attempt
(``ls_span_chunks``, see ``span_chunks.py``), and a rollout's spans are queried in memory; the
stored JSON is sent to clients without parsing (``query_spans_json``).

One write per record and transaction: a runner's exchange request moves an attempt to
``running`` (its spans) and then to ``succeeded`` (its status), and its rollout with it, in one
transaction. :class:`SqlTx` keeps the rollouts, attempts and workers it saved, or read under
their rollout's lock, and writes each saved one once, in its last state, at :meth:`SqlTx.flush`
(before the commit, and before any query that selects rows by condition); reads by key are
answered from what it holds. The runner's no-op rollouts over HTTP: 19.9 statements per
rollout before, 11.2 after (docs/store.md).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import groupby, pairwise
from typing import Any, Protocol

from pydantic import BaseModel

from lightspan.store.api.models import (
    RUNNING_ROLLOUT_STATUSES,
    Attempt,
    ResourcesUpdate,
    Rollout,
    Span,
    Worker,
)
from lightspan.store.api.query import Cond, Query, run_query
from lightspan.store.api.span_frames import compress_docs
from lightspan.store.backends.span_chunks import (
    EncodedChunk,
    IdSet,
    SpanKeyCache,
    decode_chunk,
    decode_docs,
    encode_chunk,
    span_field,
    span_ids_of,
)
from lightspan.store.core import lifecycle as lc
from lightspan.store.intake.span_row import SpanRow

_QUEUING = "('queuing', 'requeuing')"
_CHUNK = 500  # ids per IN (...) list


class Conn(Protocol):
    """The little a backend's connection must offer (``?`` placeholders, already converted)."""

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    async def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None: ...


@dataclass(frozen=True)
class Dialect:
    name: str
    text: str  # type of sortable text columns
    real: str
    bigint: str
    identity: str  # the ins_seq column definition
    for_update: str  # suffix locking selected rows
    skip_locked: str  # suffix for claiming queued rows
    contains_fn: str  # f(haystack, needle) > 0 means "contains"
    greatest_fn: str
    next_queue_seq: str  # SQL expression
    next_write_seq: str  # SQL expression
    no_limit: str  # LIMIT value meaning "all" (needed when there is an OFFSET)
    config_number: str  # SQL of a number in ls_rollouts.doc's config ({key}), NULL when unset


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]  # filter/sort columns, key columns included
    model: type[BaseModel]


ROLLOUTS = Table(
    "ls_rollouts",
    ("rollout_id",),
    ("rollout_id", "status", "mode", "resources_id", "start_time", "end_time"),
    Rollout,
)
ATTEMPTS = Table(
    "ls_attempts",
    ("rollout_id", "attempt_id"),
    (
        "rollout_id",
        "attempt_id",
        "sequence_id",
        "status",
        "worker_id",
        "start_time",
        "end_time",
        "last_heartbeat_time",
    ),
    Attempt,
)
WORKERS = Table(
    "ls_workers",
    ("worker_id",),
    (
        "worker_id",
        "status",
        "last_heartbeat_time",
        "last_dequeue_time",
        "last_busy_time",
        "last_idle_time",
        "current_rollout_id",
        "current_attempt_id",
    ),
    Worker,
)
RESOURCES = Table(
    "ls_resources",
    ("resources_id",),
    ("resources_id", "create_time", "update_time", "version"),
    ResourcesUpdate,
)
_INT_COLUMNS = {"sequence_id", "version"}
_LIMIT_COLUMNS = ("timeout_seconds", "unresponsive_seconds")
"""Copies of the rollout config's health limits (``ls_rollouts``), so the due time of an attempt
(``ls_attempts.due_at``, see :func:`~lightspan.store.core.lifecycle.health_due_time`) can be
recomputed in SQL without parsing the rollout's document."""
_RUNNING = "('preparing', 'running')"  # RUNNING_ROLLOUT_STATUSES

_DUE_OF_ROW = (
    "(SELECT CASE WHEN r.status NOT IN " + _RUNNING + " THEN NULL "
    "WHEN r.timeout_seconds IS NULL THEN {u} WHEN r.unresponsive_seconds IS NULL THEN {t} "
    "WHEN {t} < {u} THEN {t} ELSE {u} END "
    "FROM ls_rollouts r WHERE r.rollout_id = ls_attempts.rollout_id)"
).format(
    t="ls_attempts.start_time + r.timeout_seconds",
    u="COALESCE(NULLIF(ls_attempts.last_heartbeat_time, 0), ls_attempts.start_time) "
    "+ r.unresponsive_seconds",
)
"""The due time of the ``ls_attempts`` row being updated, were it its rollout's latest attempt:
:func:`~lightspan.store.core.lifecycle.health_due_time` in SQL (``NULLIF(..., 0)`` is Python's
``last_heartbeat_time or start_time``)."""

HEALTH_DUE_SQL = "SELECT rollout_id FROM ls_attempts WHERE due_at <= ?"
"""The health scan's candidates: a range of the partial index ``ls_attempts_due``. (Sorted and
deduplicated in Python: with ``DISTINCT ... ORDER BY rollout_id`` SQLite prefers walking the
whole ``(rollout_id, sequence_id)`` index, one step per attempt.)"""

_REFRESH_DUE = (
    "UPDATE ls_attempts SET due_at = CASE WHEN sequence_id = "
    "(SELECT MAX(b.sequence_id) FROM ls_attempts b WHERE b.rollout_id = ls_attempts.rollout_id) "
    f"THEN {_DUE_OF_ROW} ELSE NULL END"
)
"""Recompute ``due_at`` of attempts: the latest attempt's from the rows, NULL for the others."""


def _col_type(d: Dialect, col: str) -> str:
    if col in _INT_COLUMNS:
        return d.bigint
    if col.endswith("_time"):
        return d.real
    return d.text


def schema(d: Dialect) -> list[str]:
    """CREATE statements (idempotent)."""
    blob = "BYTEA" if d.name == "postgres" else "BLOB"
    stmts = []
    for t in (ROLLOUTS, ATTEMPTS, WORKERS, RESOURCES):
        cols = [f"ins_seq {d.identity}"]
        cols += [f"{c} {_col_type(d, c)}" for c in t.columns]
        if t is ROLLOUTS:
            cols.append(f"queue_seq {d.bigint}")
            cols += [f"{c} {d.real}" for c in _LIMIT_COLUMNS]
        if t is ATTEMPTS:
            cols.append(f"due_at {d.real}")
        if t is RESOURCES:
            cols.append(f"write_seq {d.bigint}")
        cols.append("doc TEXT NOT NULL")
        cols.append(f"UNIQUE ({', '.join(t.key)})")
        stmts.append(f"CREATE TABLE IF NOT EXISTS {t.name} ({', '.join(cols)})")
    stmts += [
        "CREATE INDEX IF NOT EXISTS ls_rollouts_queue ON ls_rollouts (queue_seq) "
        "WHERE queue_seq IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS ls_rollouts_status ON ls_rollouts (status)",
        "CREATE INDEX IF NOT EXISTS ls_attempts_seq ON ls_attempts (rollout_id, sequence_id)",
        f"CREATE TABLE IF NOT EXISTS ls_span_chunks (chunk_id {d.identity}, "
        f"rollout_id {d.text} NOT NULL, attempt_id {d.text} NOT NULL, n {d.bigint} NOT NULL, "
        f"seq_lo {d.bigint} NOT NULL, seq_hi {d.bigint} NOT NULL, ordered {d.bigint} NOT NULL, "
        f"cols {blob} NOT NULL, docs {blob} NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ls_span_chunks_attempt "
        "ON ls_span_chunks (rollout_id, attempt_id, chunk_id)",
        f"CREATE TABLE IF NOT EXISTS ls_span_counters (rollout_id {d.text} PRIMARY KEY, "
        f"value {d.bigint} NOT NULL)",
    ]
    return stmts


def _limits_of(r: Rollout) -> tuple[str, float | None, float | None]:
    return (r.status, r.config.timeout_seconds, r.config.unresponsive_seconds)


def parse_spans(docs: list[str]) -> list[Span]:
    """Spans from stored JSON. The cyclic garbage collector is paused meanwhile: building
    thousands of models otherwise triggers repeated full-heap collections that triple the time
    (10,000 spans), and these objects hold no cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        parse = Span.model_validate_json
        return [parse(d) for d in docs]
    finally:
        if enabled:
            gc.enable()


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class SqlTx:
    """:class:`~lightspan.store.core.tx.StoreTx` over a :class:`Conn` inside an open transaction."""

    def __init__(self, conn: Conn, dialect: Dialect, span_keys: SpanKeyCache) -> None:
        self.c = conn
        self.d = dialect
        self.span_keys = span_keys
        # Span ids this transaction stored, per attempt: (its first chunk id, its last chunk id,
        # ids). They join ``span_keys`` in :meth:`committed`, never before.
        self._pending: dict[tuple[str, str], tuple[int, int, set[str]]] = {}
        # Health limits of rollouts this transaction locked or wrote: (status, timeout,
        # unresponsive), for the due time of the attempts it writes.
        self._limits: dict[str, tuple[str, float | None, float | None]] = {}
        # Write-behind (module doc, "one write per record"): the records this transaction
        # locked or wrote, as it sees them, and which of them to write at :meth:`flush`.
        self._rollouts: dict[str, Rollout] = {}
        self._attempts: dict[tuple[str, str], Attempt] = {}
        # The latest attempt of rollouts locked or written here (None: it has none yet).
        self._latest: dict[str, Attempt | None] = {}
        self._workers: dict[str, Worker] = {}
        self._dirty_rollouts: dict[str, None] = {}  # ordered: the queue follows write order
        self._dirty_attempts: dict[tuple[str, str], None] = {}
        self._dirty_workers: dict[str, None] = {}

    async def flush(self) -> None:
        """Write the records saved since the last flush, each once, in its last state. The
        backends call it before COMMIT (or a savepoint's RELEASE); the queries that read
        tables by condition call it first, so they see this transaction's writes."""
        rollout_ids, self._dirty_rollouts = list(self._dirty_rollouts), {}
        attempt_keys, self._dirty_attempts = list(self._dirty_attempts), {}
        worker_ids, self._dirty_workers = list(self._dirty_workers), {}
        if rollout_ids:
            await self._run_many(
                self._rollout_write_sql(upsert=True),
                [self._rollout_params(self._rollouts[r]) for r in rollout_ids],
            )
        if attempt_keys:
            await self._run_many(
                self._upsert_sql(ATTEMPTS, ["due_at"], ["?"]),
                [await self._attempt_row(self._attempts[k]) for k in attempt_keys],
            )
        if rollout_ids:
            # Their status or limits may have changed: their attempts' due times follow (a
            # rollout that left the running statuses has none).
            running = {
                r for r in rollout_ids if self._rollouts[r].status in RUNNING_ROLLOUT_STATUSES
            }
            await self._refresh_due([r for r in rollout_ids if r in running], "")
            await self._refresh_due(
                [r for r in rollout_ids if r not in running], " AND due_at IS NOT NULL"
            )
        if worker_ids:
            await self._run_many(
                self._upsert_sql(WORKERS),
                [self._row(WORKERS, self._workers[w]) for w in worker_ids],
            )

    async def _refresh_due(self, rollout_ids: list[str], extra: str) -> None:
        for chunk in _chunks(rollout_ids):
            cond, params = self._in("rollout_id", chunk)
            await self.c.execute(f"{_REFRESH_DUE} WHERE {cond}{extra}", params)

    async def _run_many(self, sql: str, rows: list[list[Any]]) -> None:
        if len(rows) == 1:
            await self.c.execute(sql, rows[0])
        elif rows:
            await self.c.executemany(sql, rows)

    def committed(self) -> None:
        """The backend calls this once the transaction has committed."""
        for key, (_, last_chunk, ids) in self._pending.items():
            self.span_keys.merge(key, last_chunk, ids)
        self._pending.clear()

    # ---------------------------------------------------------------- helpers

    def _where(self, q: Query) -> tuple[str, list[Any]]:
        params: list[Any] = []

        def one(cond: Cond) -> str:
            if cond.op == "exact":
                params.append(cond.value)
                return f"{cond.field} = ?"
            if cond.op == "within":
                values = list(cond.value)
                if not values:
                    return "1 = 0"
                sql, in_params = self._in(cond.field, values)
                params.extend(in_params)
                return sql
            params.append(str(cond.value))
            return f"{self.d.contains_fn}({cond.field}, ?) > 0"

        parts = [one(c) for c in q.must]
        if q.conds:
            joiner = " AND " if q.logic == "and" else " OR "
            parts.append("(" + joiner.join(f"({one(c)})" for c in q.conds) + ")")
        return (" WHERE " + " AND ".join(parts)) if parts else "", params

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``column IN (...)``; PostgreSQL gets ``= ANY(array)``, one parameter (psycopg parses
        statements with hundreds of placeholders slowly)."""
        if self.d.name == "postgres":
            return f"{column} = ANY(?)", [list(values)]
        return f"{column} IN ({_marks(len(values))})", list(values)

    def _order(self, q: Query) -> str:
        if not q.sort_by:
            return " ORDER BY ins_seq"
        desc = q.sort_order == "desc"
        time_field = q.sort_by.endswith("_time")
        nulls = "FIRST" if desc == time_field else "LAST"
        return f" ORDER BY {q.sort_by} {'DESC' if desc else 'ASC'} NULLS {nulls}, ins_seq"

    def _page(self, q: Query) -> str:
        if q.limit == -1 and not q.offset:
            return ""
        limit = self.d.no_limit if q.limit == -1 else str(int(q.limit))
        return f" LIMIT {limit} OFFSET {int(q.offset)}"

    async def _query_docs(self, table: Table, q: Query) -> tuple[list[str], int]:
        await self.flush()
        where, params = self._where(q)
        rows = await self.c.fetchall(
            f"SELECT doc FROM {table.name}{where}{self._order(q)}{self._page(q)}", params
        )
        docs = [r[0] for r in rows]
        if q.limit == -1 and not q.offset:
            total = len(docs)
        else:
            total = (await self.c.fetchall(f"SELECT COUNT(*) FROM {table.name}{where}", params))[0][
                0
            ]
        return docs, int(total)

    def _row(self, table: Table, model: BaseModel) -> list[Any]:
        return [getattr(model, c) for c in table.columns] + [model.model_dump_json()]

    def _upsert_sql(
        self, table: Table, extra_cols: Sequence[str] = (), extra_vals: Sequence[str] = ()
    ) -> str:
        cols = [*table.columns, *extra_cols, "doc"]
        vals = ["?"] * len(table.columns) + list(extra_vals) + ["?"]
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in table.key)
        return (
            f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join(vals)}) "
            f"ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}"
        )

    # ---------------------------------------------------------------- rollouts

    async def get_rollouts(
        self, rollout_ids: list[str], *, for_update: bool = False
    ) -> dict[str, Rollout]:
        out = {r: self._rollouts[r] for r in rollout_ids if r in self._rollouts}
        lock = self.d.for_update if for_update else ""
        for chunk in _chunks(sorted(set(rollout_ids) - out.keys())):
            cond, params = self._in("rollout_id", chunk)
            rows = await self.c.fetchall(
                f"SELECT doc FROM ls_rollouts WHERE {cond} ORDER BY rollout_id{lock}", params
            )
            for (doc,) in rows:
                r = Rollout.model_validate_json(doc)
                out[r.rollout_id] = r
                if for_update:  # locked: it holds until this transaction writes it
                    self._rollouts[r.rollout_id] = r
                    self._limits[r.rollout_id] = _limits_of(r)
        return out

    def _rollout_write_sql(self, *, upsert: bool, if_absent: bool = False) -> str:
        q = f"CASE WHEN ? IN {_QUEUING} THEN {self.d.next_queue_seq} ELSE NULL END"
        cols = [*ROLLOUTS.columns, *_LIMIT_COLUMNS, "queue_seq", "doc"]
        vals = ["?"] * (len(ROLLOUTS.columns) + len(_LIMIT_COLUMNS)) + [q, "?"]
        sql = f"INSERT INTO ls_rollouts ({', '.join(cols)}) VALUES ({', '.join(vals)})"
        if if_absent:
            return sql + " ON CONFLICT (rollout_id) DO NOTHING"
        if not upsert:
            return sql
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in (*ROLLOUTS.columns, *_LIMIT_COLUMNS) if c != "rollout_id"
        )
        return (
            sql + f" ON CONFLICT (rollout_id) DO UPDATE SET {updates}, doc = excluded.doc, "
            f"queue_seq = CASE WHEN excluded.status IN {_QUEUING} "
            "THEN COALESCE(ls_rollouts.queue_seq, excluded.queue_seq) ELSE NULL END"
        )

    def _plain(self, r: Rollout) -> Rollout:
        """The rollout as stored (without an ``attempt``), its limits noted for due times."""
        plain = (
            r
            if type(r) is Rollout
            else Rollout.model_validate({k: v for k, v in r.model_dump().items() if k != "attempt"})
        )
        self._limits[plain.rollout_id] = _limits_of(plain)
        return plain

    def _rollout_params(self, r: Rollout) -> list[Any]:
        plain = self._plain(r)
        return [getattr(plain, c) for c in ROLLOUTS.columns] + [
            plain.config.timeout_seconds,
            plain.config.unresponsive_seconds,
            plain.status,
            plain.model_dump_json(),
        ]

    async def insert_rollouts(self, rollouts: list[Rollout], *, if_absent: bool = False) -> None:
        await self.flush()  # queue positions follow the order of writes
        sql = self._rollout_write_sql(upsert=False, if_absent=if_absent)
        plains = [self._plain(r) for r in rollouts]
        await self._run_many(sql, [self._rollout_params(r) for r in plains])
        for r in plains:
            if if_absent:  # maybe not written: the stored row is unknown
                self._limits.pop(r.rollout_id, None)
                self._rollouts.pop(r.rollout_id, None)
            else:
                self._rollouts[r.rollout_id] = r

    async def save_rollout(self, rollout: Rollout) -> None:
        """Written at :meth:`flush`, which also recomputes the due times of the rollout's
        attempts (its status or limits may have changed)."""
        rid = rollout.rollout_id
        self._rollouts[rid] = self._plain(rollout)
        self._dirty_rollouts.pop(rid, None)  # to the end: the queue follows the last write
        self._dirty_rollouts[rid] = None

    async def claim_queued(self, limit: int) -> list[Rollout]:
        await self.flush()
        rows = await self.c.fetchall(
            "SELECT doc FROM ls_rollouts WHERE queue_seq IS NOT NULL "
            f"ORDER BY queue_seq LIMIT {int(limit)}{self.d.skip_locked}"
        )
        claimed = [Rollout.model_validate_json(doc) for (doc,) in rows]
        for r in claimed:  # locked (skip_locked) or, in SQLite, serialized
            self._rollouts[r.rollout_id] = self._plain(r)
        return claimed

    async def rollouts_in_status(self, statuses: list[str]) -> list[Rollout]:
        await self.flush()
        cond, params = self._in("status", statuses)
        rows = await self.c.fetchall(
            f"SELECT doc FROM ls_rollouts WHERE {cond} ORDER BY ins_seq", params
        )
        return [Rollout.model_validate_json(doc) for (doc,) in rows]

    async def health_due(self, now: float) -> list[str]:
        """Read through the partial index on ``due_at``: the cost follows the rollouts due, not
        the running ones (idle running rollouts have a future due time and are not read)."""
        await self.flush()
        rows = await self.c.fetchall(HEALTH_DUE_SQL, [now + lc.HEALTH_DUE_SLACK])
        return sorted({r for (r,) in rows})

    async def refresh_due(self, rollout_ids: list[str]) -> None:
        await self.flush()
        await self._refresh_due(sorted(set(rollout_ids)), "")

    async def migrate_health_due(self) -> bool:
        """Give a database written before due times existed its ``due_at`` and limit columns,
        computed from the stored rows, then the index the scan reads (idempotent). Returns
        whether columns were added."""
        if self.d.name == "postgres":
            found = await self.c.fetchall(
                "SELECT COUNT(*) FROM information_schema.columns "
                "WHERE table_name = 'ls_attempts' AND column_name = 'due_at' "
                "AND table_schema = current_schema()"
            )
            missing = not found[0][0]
        else:
            found = await self.c.fetchall("PRAGMA table_info(ls_attempts)")
            missing = not any(row[1] == "due_at" for row in found)
        if missing:
            for col in _LIMIT_COLUMNS:
                await self.c.execute(f"ALTER TABLE ls_rollouts ADD COLUMN {col} {self.d.real}")
            await self.c.execute(f"ALTER TABLE ls_attempts ADD COLUMN due_at {self.d.real}")
            limits = ", ".join(
                f"{col} = {self.d.config_number.format(key=col)}" for col in _LIMIT_COLUMNS
            )
            await self.c.execute(f"UPDATE ls_rollouts AS r SET {limits}")
            await self.c.execute(_REFRESH_DUE)
        await self.c.execute(
            "CREATE INDEX IF NOT EXISTS ls_attempts_due ON ls_attempts (due_at) "
            "WHERE due_at IS NOT NULL"
        )
        return missing

    async def query_rollouts(self, q: Query) -> tuple[list[Rollout], int]:
        docs, total = await self._query_docs(ROLLOUTS, q)
        return [Rollout.model_validate_json(d) for d in docs], total

    # ---------------------------------------------------------------- attempts

    async def get_attempts(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Attempt]:
        # One statement for a span batch's attempts (it spans several rollouts), not one each.
        out = {k: self._attempts[k] for k in keys if k in self._attempts}
        for chunk in _chunks(sorted(set(keys) - out.keys())):
            cond = " OR ".join(["(rollout_id = ? AND attempt_id = ?)"] * len(chunk))
            params = [v for key in chunk for v in key]
            rows = await self.c.fetchall(f"SELECT doc FROM ls_attempts WHERE {cond}", params)
            for (doc,) in rows:
                a = Attempt.model_validate_json(doc)
                out[(a.rollout_id, a.attempt_id)] = a
                if a.rollout_id in self._rollouts:  # under its rollout's lock: it holds
                    self._attempts[(a.rollout_id, a.attempt_id)] = a
        return out

    async def latest_attempts(self, rollout_ids: list[str]) -> dict[str, Attempt]:
        out: dict[str, Attempt] = {}
        known = {r for r in rollout_ids if r in self._latest}
        for r in known:
            if (a := self._latest[r]) is not None:
                out[r] = a
        for chunk in _chunks(sorted(set(rollout_ids) - known)):
            cond, params = self._in("a.rollout_id", chunk)
            rows = await self.c.fetchall(
                f"SELECT a.doc FROM ls_attempts a WHERE {cond} AND a.sequence_id = "
                "(SELECT MAX(b.sequence_id) FROM ls_attempts b WHERE b.rollout_id = a.rollout_id) "
                "ORDER BY a.ins_seq",
                params,
            )
            for (doc,) in rows:
                a = Attempt.model_validate_json(doc)
                a = self._attempts.get((a.rollout_id, a.attempt_id), a)  # this tx's own write
                out[a.rollout_id] = a
            for r in chunk:
                if r in self._rollouts:  # locked: no other attempt can start
                    self._latest[r] = out.get(r)
        return out

    async def _attempt_row(self, attempt: Attempt) -> list[Any]:
        """The attempt's columns, ``due_at`` (computed as if it were the latest attempt: an
        older one only becomes an extra candidate, cleared by the scan's ``refresh_due``) and
        its document. The rollout's limits come from this transaction's locked read of it, so
        a span batch adds no statement."""
        limits = self._limits.get(attempt.rollout_id)
        if limits is None:
            rows = await self.c.fetchall(
                "SELECT status, timeout_seconds, unresponsive_seconds FROM ls_rollouts "
                "WHERE rollout_id = ?",
                [attempt.rollout_id],
            )
            limits = rows[0] if rows else ("", None, None)
        due = lc.health_due_time(limits[0], limits[1], limits[2], attempt)
        return [getattr(attempt, c) for c in ATTEMPTS.columns] + [due, attempt.model_dump_json()]

    async def insert_attempt(self, attempt: Attempt, *, if_absent: bool = False) -> None:
        cols = [*ATTEMPTS.columns, "due_at", "doc"]
        sql = f"INSERT INTO ls_attempts ({', '.join(cols)}) VALUES ({_marks(len(cols))})"
        if if_absent:
            sql += " ON CONFLICT (rollout_id, attempt_id) DO NOTHING"
        await self.c.execute(sql, await self._attempt_row(attempt))
        key = (attempt.rollout_id, attempt.attempt_id)
        if if_absent:  # maybe not written: the stored row is unknown
            self._attempts.pop(key, None)
            self._latest.pop(attempt.rollout_id, None)
        else:
            self._attempts[key] = attempt
            self._note_latest(attempt)

    def _note_latest(self, attempt: Attempt) -> None:
        if attempt.rollout_id not in self._latest:
            return
        known = self._latest[attempt.rollout_id]
        if (
            known is None
            or known.attempt_id == attempt.attempt_id
            or attempt.sequence_id > known.sequence_id
        ):
            self._latest[attempt.rollout_id] = attempt

    async def save_attempt(self, attempt: Attempt) -> None:
        await self.save_attempts([attempt])

    async def save_attempts(self, attempts: list[Attempt]) -> None:
        """Written at :meth:`flush`, once per attempt whatever the number of saves."""
        for a in attempts:
            key = (a.rollout_id, a.attempt_id)
            self._attempts[key] = a
            self._dirty_attempts[key] = None
            self._note_latest(a)

    async def query_attempts(self, q: Query) -> tuple[list[Attempt], int]:
        docs, total = await self._query_docs(ATTEMPTS, q)
        return [Attempt.model_validate_json(d) for d in docs], total

    # ---------------------------------------------------------------- workers

    async def get_worker(self, worker_id: str) -> Worker | None:
        if worker_id in self._workers:  # this transaction's own write
            return self._workers[worker_id]
        rows = await self.c.fetchall("SELECT doc FROM ls_workers WHERE worker_id = ?", [worker_id])
        return Worker.model_validate_json(rows[0][0]) if rows else None

    async def save_worker(self, worker: Worker) -> None:
        """Written at :meth:`flush`, once per worker whatever the number of saves."""
        self._workers[worker.worker_id] = worker
        self._dirty_workers[worker.worker_id] = None

    async def query_workers(self, q: Query) -> tuple[list[Worker], int]:
        docs, total = await self._query_docs(WORKERS, q)
        return [Worker.model_validate_json(d) for d in docs], total

    # ---------------------------------------------------------------- resources

    async def get_resources(self, resources_id: str) -> ResourcesUpdate | None:
        rows = await self.c.fetchall(
            "SELECT doc FROM ls_resources WHERE resources_id = ?", [resources_id]
        )
        return ResourcesUpdate.model_validate_json(rows[0][0]) if rows else None

    async def latest_resources(self) -> ResourcesUpdate | None:
        rows = await self.c.fetchall(
            "SELECT doc FROM ls_resources ORDER BY update_time DESC, write_seq DESC LIMIT 1"
        )
        return ResourcesUpdate.model_validate_json(rows[0][0]) if rows else None

    async def save_resources(self, update: ResourcesUpdate) -> None:
        sql = self._upsert_sql(RESOURCES, ["write_seq"], [self.d.next_write_seq])
        await self.c.execute(sql, self._row(RESOURCES, update))

    async def query_resources(self, q: Query) -> tuple[list[ResourcesUpdate], int]:
        docs, total = await self._query_docs(RESOURCES, q)
        return [ResourcesUpdate.model_validate_json(d) for d in docs], total

    # ---------------------------------------------------------------- spans

    async def _stored_span_ids(self, key: tuple[str, str]) -> IdSet:
        """Span ids stored for an attempt by committed transactions: the cache, brought up to
        date with chunks written since its watermark (by other processes or servers). Chunks
        this transaction wrote are left out: they are not committed yet (see :meth:`committed`),
        and the caller checks them through ``_pending``. They are the attempt's newest (its
        chunks are written one transaction at a time), so they start at the first one's id."""
        entry = self.span_keys.get(key)
        watermark = entry[0] if entry is not None else 0
        pending = self._pending.get(key)
        sql = (
            "SELECT chunk_id, cols FROM ls_span_chunks "
            "WHERE rollout_id = ? AND attempt_id = ? AND chunk_id > ?"
        )
        params: list[Any] = [key[0], key[1], watermark]
        if pending is not None:
            sql += " AND chunk_id < ?"
            params.append(pending[0])
        rows = await self.c.fetchall(sql + " ORDER BY chunk_id", params)
        if entry is not None and not rows:
            return entry[1]
        # Committed chunks only: safe to cache now.
        new_ids = [i for _, cols in rows for i in span_ids_of(bytes(cols))]
        return self.span_keys.add(key, int(rows[-1][0]) if rows else watermark, new_ids)

    async def _insert_chunk(self, key: tuple[str, str], chunk: EncodedChunk) -> int:
        rows = await self.c.fetchall(
            "INSERT INTO ls_span_chunks "
            "(rollout_id, attempt_id, n, seq_lo, seq_hi, ordered, cols, docs) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING chunk_id",
            [*key, chunk.n, chunk.seq_lo, chunk.seq_hi, int(chunk.ordered), chunk.cols, chunk.docs],
        )
        return int(rows[0][0])

    async def insert_spans(
        self, groups: dict[tuple[str, str], list[SpanRow]]
    ) -> dict[tuple[str, str], set[str]]:
        """One chunk row per attempt, holding its spans not stored before."""
        inserted: dict[tuple[str, str], set[str]] = {}
        for key, group in groups.items():
            stored = await self._stored_span_ids(key)
            pending = self._pending.get(key)
            mine = pending[2] if pending is not None else set()
            if mine:
                new = [s for s in group if s.span_id not in stored and s.span_id not in mine]
            elif stored:
                new = [s for s in group if s.span_id not in stored]
            else:
                new = group  # a new attempt: nothing to compare with
            if not new:
                continue
            chunk_id = await self._insert_chunk(key, encode_chunk(new))
            ids = {s.span_id for s in new}
            first_chunk = pending[0] if pending is not None else chunk_id
            self._pending[key] = (first_chunk, chunk_id, mine | ids if mine else ids)
            inserted[key] = ids
        return inserted

    async def _span_chunks(self, q: Query, columns: str) -> list[tuple[Any, ...]]:
        """The rollout's chunks (and the attempt's, when ``must`` names one), in order."""
        where = {c.field: c.value for c in q.must if c.op == "exact"}
        sql = f"SELECT {columns} FROM ls_span_chunks WHERE rollout_id = ?"
        params: list[Any] = [where["rollout_id"]]
        if "attempt_id" in where:
            sql += " AND attempt_id = ?"
            params.append(where["attempt_id"])
        return await self.c.fetchall(sql + " ORDER BY chunk_id", params)

    async def _page_chunks(self, q: Query) -> tuple[list[tuple[int, bytes]], int, int, int] | None:
        """The common read (everything, or a page, in sequence order) when each chunk is in
        sequence order and the chunks follow each other: ``(chunks, skip, count, total)``, the
        ``(n, compressed documents)`` of the chunks the page touches, how many documents of
        the first to skip and how many the page holds. ``None``: not that case."""
        if q.conds or q.sort_by not in (None, "sequence_id") or q.sort_order != "asc":
            return None
        heads = await self._span_chunks(q, "chunk_id, n, seq_lo, seq_hi, ordered")
        in_order = q.sort_by is None or (
            all(h[4] for h in heads) and all(b[2] >= a[3] for a, b in pairwise(heads))
        )
        if not in_order:
            return None
        total = sum(int(h[1]) for h in heads)
        end = total if q.limit == -1 else min(total, q.offset + q.limit)
        wanted: dict[int, int] = {}
        first, pos = 0, 0
        for h in heads:
            n = int(h[1])
            if pos + n > q.offset and pos < end:
                if not wanted:
                    first = pos
                wanted[h[0]] = n
            pos += n
        chunks: list[tuple[int, bytes]] = []
        for part in _chunks(list(wanted)):
            cond, params = self._in("chunk_id", part)
            rows = await self.c.fetchall(
                f"SELECT chunk_id, docs FROM ls_span_chunks WHERE {cond} ORDER BY chunk_id", params
            )
            chunks.extend((wanted[chunk_id], bytes(blob)) for chunk_id, blob in rows)
        return chunks, q.offset - first, max(0, end - q.offset), total

    async def query_spans_json(self, q: Query) -> tuple[list[str], int]:
        """Span query over the rollout's chunks, evaluated in memory as the in-memory backend
        does (``must``, the rollout and maybe the attempt, is what the SELECT applies).

        Fast path, the common read (everything, or a page, in sequence order): only the
        documents of the chunks the page touches are decompressed, and ``cols`` is not
        parsed."""
        fast = await self._page_chunks(q)
        if fast is not None:
            chunks, skip, count, total = fast
            docs: list[str] = []
            for _, blob in chunks:
                docs.extend(decode_docs(blob))
            return docs[skip : skip + count], total
        items: list[Any] = []
        for rollout_id, attempt_id, cols, blob in await self._span_chunks(
            q, "rollout_id, attempt_id, cols, docs"
        ):
            items.extend(decode_chunk(rollout_id, attempt_id, bytes(cols), bytes(blob)))
        # ``must`` is what the SELECT applied; the rest of the query is evaluated here.
        page, total = run_query(items, replace(q, must=[]), span_field)
        return [item[3] for item in page], total

    async def query_spans_frames(self, q: Query) -> tuple[list[bytes], int, int]:
        """The page as compact-page frames (``span_frames.py``), its span count and total: on
        the fast path the stored compressed chunks as they are (the chunks the page cuts are
        re-compressed with just its documents), else one frame of the page's documents."""
        fast = await self._page_chunks(q)
        if fast is None:
            docs, total = await self.query_spans_json(q)
            return ([compress_docs(docs)] if docs else []), len(docs), total
        chunks, skip, count, total = fast
        frames: list[bytes] = []
        pos = -skip  # the page position of the chunk's first document
        for n, blob in chunks:
            lo, hi = max(0, -pos), min(n, count - pos)
            if hi > lo:
                whole = (lo, hi) == (0, n)
                frames.append(blob if whole else compress_docs(decode_docs(blob)[lo:hi]))
            pos += n
        return frames, count, total

    async def query_spans(self, q: Query) -> tuple[list[Span], int]:
        docs, total = await self.query_spans_json(q)
        return parse_spans(docs), total

    async def migrate_legacy_spans(self, page: int = 5000) -> int:
        """Move the spans of a database written before chunks existed (``ls_spans``, one row
        per span) into chunks, in their insertion order, then drop that table. Returns how many
        spans moved (0 when there is no such table)."""
        if self.d.name == "postgres":
            found = await self.c.fetchall("SELECT to_regclass('ls_spans') IS NOT NULL")
        else:
            found = await self.c.fetchall(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'ls_spans'"
            )
        if not found[0][0]:
            return 0
        moved, after = 0, -1
        while True:
            rows = await self.c.fetchall(
                "SELECT ins_seq, doc FROM ls_spans WHERE ins_seq > ? "
                f"ORDER BY ins_seq LIMIT {int(page)}",
                [after],
            )
            if not rows:
                break
            after = rows[-1][0]
            spans = [SpanRow.from_span(s) for s in parse_spans([doc for _, doc in rows])]
            # One chunk per run of consecutive spans of one attempt.
            for key, run in groupby(spans, key=lambda s: (s.rollout_id, s.attempt_id)):
                chunk = encode_chunk(list(run))
                await self._insert_chunk(key, chunk)
                moved += chunk.n
        await self.c.execute("DROP TABLE ls_spans")
        return moved

    async def bump_span_seq(self, rollout_id: str, n: int) -> int:
        rows = await self.c.fetchall(
            "INSERT INTO ls_span_counters (rollout_id, value) VALUES (?, ?) "
            "ON CONFLICT (rollout_id) DO UPDATE SET "
            "value = ls_span_counters.value + excluded.value "
            "RETURNING value",
            [rollout_id, n],
        )
        return int(rows[0][0])

    async def raise_span_seqs(self, values: dict[str, int]) -> None:
        if values:
            await self.c.executemany(
                "INSERT INTO ls_span_counters (rollout_id, value) VALUES (?, ?) "
                "ON CONFLICT (rollout_id) DO UPDATE SET value = "
                f"{self.d.greatest_fn}(ls_span_counters.value, excluded.value)",
                sorted(values.items()),
            )

    async def counts(self) -> dict[str, int]:
        await self.flush()
        names = {
            "total_rollouts": "SELECT COUNT(*) FROM ls_rollouts",
            "total_attempts": "SELECT COUNT(*) FROM ls_attempts",
            "total_spans": "SELECT COALESCE(SUM(n), 0) FROM ls_span_chunks",
            "total_resources": "SELECT COUNT(*) FROM ls_resources",
            "total_workers": "SELECT COUNT(*) FROM ls_workers",
        }
        sql = "SELECT " + ", ".join(f"({q})" for q in names.values())
        row = (await self.c.fetchall(sql))[0]
        return {k: int(v) for k, v in zip(names, row, strict=True)}
