"""The storage primitives of ``tx.py`` in SQL, shared by the SQLite and PostgreSQL backends.

Why one SQL layer: both databases speak the same SQL for everything the store needs
(``ON CONFLICT``, ``RETURNING``, partial indexes, ``NULLS FIRST/LAST``); the few differences
(placeholders, identity columns, row locks, substring search, sequences) live in
:class:`Dialect`.

Layout: each record is one row holding the whole model as JSON text (``doc``) plus copies of the
fields queries filter or sort on, each in its own indexed-as-needed column. Spans are indexed
by ``(rollout_id, sequence_id, ins_seq)`` so a rollout's spans come back in order from one index
range scan, and stored JSON can be sent to clients without parsing (``query_spans_json``).
``ins_seq`` (an identity column) is the insertion order used when no sort is asked and to break
ties. A rollout is queued while ``queue_seq`` is not null; ``queue_seq`` orders the queue.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from .models import Attempt, ResourcesUpdate, Rollout, Span, Worker
from .query import Cond, Query
from .span_row import SpanRow

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
SPANS = Table(
    "ls_spans",
    ("rollout_id", "attempt_id", "span_id"),
    (
        "rollout_id",
        "attempt_id",
        "span_id",
        "sequence_id",
        "trace_id",
        "parent_id",
        "name",
        "start_time",
        "end_time",
    ),
    Span,
)
_INT_COLUMNS = {"sequence_id", "version"}


def _col_type(d: Dialect, col: str) -> str:
    if col in _INT_COLUMNS:
        return d.bigint
    if col.endswith("_time"):
        return d.real
    return d.text


def schema(d: Dialect) -> list[str]:
    """CREATE statements (idempotent)."""
    stmts = []
    for t in (ROLLOUTS, ATTEMPTS, WORKERS, RESOURCES, SPANS):
        cols = [f"ins_seq {d.identity}"]
        cols += [f"{c} {_col_type(d, c)}" for c in t.columns]
        if t is ROLLOUTS:
            cols.append(f"queue_seq {d.bigint}")
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
        "CREATE INDEX IF NOT EXISTS ls_spans_seq ON ls_spans (rollout_id, sequence_id, ins_seq)",
        f"CREATE TABLE IF NOT EXISTS ls_span_counters (rollout_id {d.text} PRIMARY KEY, "
        f"value {d.bigint} NOT NULL)",
    ]
    return stmts


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
    """:class:`~lightspan.store.tx.StoreTx` over a :class:`Conn` inside an open transaction."""

    def __init__(self, conn: Conn, dialect: Dialect) -> None:
        self.c = conn
        self.d = dialect

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
        out: dict[str, Rollout] = {}
        lock = self.d.for_update if for_update else ""
        for chunk in _chunks(sorted(set(rollout_ids))):
            cond, params = self._in("rollout_id", chunk)
            rows = await self.c.fetchall(
                f"SELECT doc FROM ls_rollouts WHERE {cond} ORDER BY rollout_id{lock}", params
            )
            for (doc,) in rows:
                r = Rollout.model_validate_json(doc)
                out[r.rollout_id] = r
        return out

    def _rollout_write_sql(self, *, upsert: bool, if_absent: bool = False) -> str:
        q = f"CASE WHEN ? IN {_QUEUING} THEN {self.d.next_queue_seq} ELSE NULL END"
        cols = [*ROLLOUTS.columns, "queue_seq", "doc"]
        vals = ["?"] * len(ROLLOUTS.columns) + [q, "?"]
        sql = f"INSERT INTO ls_rollouts ({', '.join(cols)}) VALUES ({', '.join(vals)})"
        if if_absent:
            return sql + " ON CONFLICT (rollout_id) DO NOTHING"
        if not upsert:
            return sql
        updates = ", ".join(f"{c} = excluded.{c}" for c in ROLLOUTS.columns if c != "rollout_id")
        return (
            sql + f" ON CONFLICT (rollout_id) DO UPDATE SET {updates}, doc = excluded.doc, "
            f"queue_seq = CASE WHEN excluded.status IN {_QUEUING} "
            "THEN COALESCE(ls_rollouts.queue_seq, excluded.queue_seq) ELSE NULL END"
        )

    def _rollout_params(self, r: Rollout) -> list[Any]:
        plain = (
            r
            if type(r) is Rollout
            else Rollout.model_validate({k: v for k, v in r.model_dump().items() if k != "attempt"})
        )
        return [getattr(plain, c) for c in ROLLOUTS.columns] + [
            plain.status,
            plain.model_dump_json(),
        ]

    async def insert_rollouts(self, rollouts: list[Rollout], *, if_absent: bool = False) -> None:
        sql = self._rollout_write_sql(upsert=False, if_absent=if_absent)
        rows = [self._rollout_params(r) for r in rollouts]
        if len(rows) == 1:
            await self.c.execute(sql, rows[0])
        else:
            await self.c.executemany(sql, rows)

    async def save_rollout(self, rollout: Rollout) -> None:
        await self.c.execute(self._rollout_write_sql(upsert=True), self._rollout_params(rollout))

    async def claim_queued(self, limit: int) -> list[Rollout]:
        rows = await self.c.fetchall(
            "SELECT doc FROM ls_rollouts WHERE queue_seq IS NOT NULL "
            f"ORDER BY queue_seq LIMIT {int(limit)}{self.d.skip_locked}"
        )
        return [Rollout.model_validate_json(doc) for (doc,) in rows]

    async def rollouts_in_status(self, statuses: list[str]) -> list[Rollout]:
        cond, params = self._in("status", statuses)
        rows = await self.c.fetchall(
            f"SELECT doc FROM ls_rollouts WHERE {cond} ORDER BY ins_seq", params
        )
        return [Rollout.model_validate_json(doc) for (doc,) in rows]

    async def query_rollouts(self, q: Query) -> tuple[list[Rollout], int]:
        docs, total = await self._query_docs(ROLLOUTS, q)
        return [Rollout.model_validate_json(d) for d in docs], total

    # ---------------------------------------------------------------- attempts

    async def get_attempts(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Attempt]:
        out: dict[tuple[str, str], Attempt] = {}
        by_rollout: dict[str, list[str]] = {}
        for r, a in keys:
            by_rollout.setdefault(r, []).append(a)
        for rollout_id, attempt_ids in by_rollout.items():
            cond, params = self._in("attempt_id", attempt_ids)
            rows = await self.c.fetchall(
                f"SELECT doc FROM ls_attempts WHERE rollout_id = ? AND {cond}",
                [rollout_id, *params],
            )
            for (doc,) in rows:
                a = Attempt.model_validate_json(doc)
                out[(a.rollout_id, a.attempt_id)] = a
        return out

    async def latest_attempts(self, rollout_ids: list[str]) -> dict[str, Attempt]:
        out: dict[str, Attempt] = {}
        for chunk in _chunks(sorted(set(rollout_ids))):
            cond, params = self._in("a.rollout_id", chunk)
            rows = await self.c.fetchall(
                f"SELECT a.doc FROM ls_attempts a WHERE {cond} AND a.sequence_id = "
                "(SELECT MAX(b.sequence_id) FROM ls_attempts b WHERE b.rollout_id = a.rollout_id) "
                "ORDER BY a.ins_seq",
                params,
            )
            for (doc,) in rows:
                a = Attempt.model_validate_json(doc)
                out[a.rollout_id] = a
        return out

    async def insert_attempt(self, attempt: Attempt, *, if_absent: bool = False) -> None:
        cols = [*ATTEMPTS.columns, "doc"]
        sql = f"INSERT INTO ls_attempts ({', '.join(cols)}) VALUES ({_marks(len(cols))})"
        if if_absent:
            sql += " ON CONFLICT (rollout_id, attempt_id) DO NOTHING"
        await self.c.execute(sql, self._row(ATTEMPTS, attempt))

    async def save_attempt(self, attempt: Attempt) -> None:
        await self.c.execute(self._upsert_sql(ATTEMPTS), self._row(ATTEMPTS, attempt))

    async def query_attempts(self, q: Query) -> tuple[list[Attempt], int]:
        docs, total = await self._query_docs(ATTEMPTS, q)
        return [Attempt.model_validate_json(d) for d in docs], total

    # ---------------------------------------------------------------- workers

    async def get_worker(self, worker_id: str) -> Worker | None:
        rows = await self.c.fetchall("SELECT doc FROM ls_workers WHERE worker_id = ?", [worker_id])
        return Worker.model_validate_json(rows[0][0]) if rows else None

    async def save_worker(self, worker: Worker) -> None:
        await self.c.execute(self._upsert_sql(WORKERS), self._row(WORKERS, worker))

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

    async def insert_spans(self, spans: list[Span | SpanRow]) -> set[tuple[str, str, str]]:
        """One multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per chunk: a single
        statement per ~500 spans, and it reports exactly which spans were new."""
        cols = [*SPANS.columns, "doc"]
        rows = [
            (
                s.rollout_id,
                s.attempt_id,
                s.span_id,
                s.sequence_id,
                s.trace_id,
                s.parent_id,
                s.name,
                s.start_time,
                s.end_time,
                s.doc() if type(s) is SpanRow else s.model_dump_json(),
            )
            for s in spans
        ]
        bulk = getattr(self.c, "bulk_insert_spans", None)
        if bulk is not None:  # PostgreSQL: COPY (see postgres.py)
            return {(r, a, i) for r, a, i in await bulk(cols, rows)}
        row_marks = "(" + _marks(len(cols)) + ")"
        inserted: set[tuple[str, str, str]] = set()
        for chunk in _chunks(rows):
            params = [v for row in chunk for v in row]
            found = await self.c.fetchall(
                f"INSERT INTO ls_spans ({', '.join(cols)}) VALUES "
                + ", ".join([row_marks] * len(chunk))
                + " ON CONFLICT (rollout_id, attempt_id, span_id) DO NOTHING "
                "RETURNING rollout_id, attempt_id, span_id",
                params,
            )
            inserted.update((r, a, s) for r, a, s in found)
        return inserted

    async def query_spans_json(self, q: Query) -> tuple[list[str], int]:
        return await self._query_docs(SPANS, q)

    async def query_spans(self, q: Query) -> tuple[list[Span], int]:
        docs, total = await self._query_docs(SPANS, q)
        return parse_spans(docs), total

    async def bump_span_seq(self, rollout_id: str, n: int) -> int:
        rows = await self.c.fetchall(
            "INSERT INTO ls_span_counters (rollout_id, value) VALUES (?, ?) "
            "ON CONFLICT (rollout_id) DO UPDATE SET "
            "value = ls_span_counters.value + excluded.value "
            "RETURNING value",
            [rollout_id, n],
        )
        return int(rows[0][0])

    async def raise_span_seq(self, rollout_id: str, value: int) -> None:
        await self.c.execute(
            "INSERT INTO ls_span_counters (rollout_id, value) VALUES (?, ?) "
            "ON CONFLICT (rollout_id) DO UPDATE SET value = "
            f"{self.d.greatest_fn}(ls_span_counters.value, excluded.value)",
            [rollout_id, value],
        )

    async def counts(self) -> dict[str, int]:
        names = {
            "total_rollouts": "ls_rollouts",
            "total_attempts": "ls_attempts",
            "total_spans": "ls_spans",
            "total_resources": "ls_resources",
            "total_workers": "ls_workers",
        }
        sql = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in names.values())
        row = (await self.c.fetchall(sql))[0]
        return {k: int(v) for k, v in zip(names, row, strict=True)}
