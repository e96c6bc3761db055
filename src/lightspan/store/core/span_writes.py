"""The span write path of :class:`~lightspan.store.core.store.CoreStore`: one batch of rows in.

Why its own module: it is the store's hot path (every OTLP batch goes through it) and has rules
of its own: rows only (models become rows at :meth:`SpanWrites.add_many_spans`), taken per
attempt (``RowGroups``: the Rust converter's, or ``span_row.group_rows``), duplicates
found within the batch and against what is stored, sequence ids issued in the storing
transaction, unknown rollouts auto-registered, the root span's status applied to an
auto-registered attempt, and group commit (batches that arrive while a transaction runs share
the next one). A mixin of ``CoreStore``: it uses the store's transactions and shared steps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from lightspan.store.api.base import (
    AddSpansResult,
    NotFoundError,
    SpanOutcome,
)
from lightspan.store.api.models import (
    Attempt,
    Rollout,
    RolloutConfig,
    Span,
)
from lightspan.store.core import lifecycle as lc
from lightspan.store.core.tx import StoreTx
from lightspan.store.intake.span_row import RowGroup, RowGroups, SpanRow, group_rows


def _as_rows(
    spans: Sequence[Span | SpanRow], assign: Collection[int]
) -> tuple[list[SpanRow], list[tuple[int, Span]]]:
    """The batch as rows, and the models among it whose sequence id the store issues."""
    if all(type(s) is SpanRow for s in spans):
        return list(spans), []  # type: ignore[arg-type]
    issue = frozenset(assign)
    rows: list[SpanRow] = []
    models: list[tuple[int, Span]] = []
    for i, s in enumerate(spans):
        if type(s) is SpanRow:
            rows.append(s)
            continue
        pending = i in issue
        rows.append(SpanRow.from_span(s, pending=pending))  # type: ignore[arg-type]
        if pending:
            models.append((i, s))  # type: ignore[arg-type]
    return rows, models


@dataclass(slots=True)
class SpanJob:
    """One ``add_many_spans`` call: its spans, those still to decide per attempt, the outcomes,
    and (under group commit) its future."""

    spans: list[SpanRow]
    groups: dict[tuple[str, str], RowGroup]
    outcomes: list[SpanOutcome | None]
    fut: asyncio.Future[None] | None = None
    then: Callable[[StoreTx], Awaitable[Any]] | None = None
    then_result: Any = None
    all_stored: bool = False  # every span stored: ``outcomes`` left unset (no object per span)

    def finish(self, error: BaseException | None) -> None:
        if self.fut is None or self.fut.done():
            return
        if error is None:
            self.fut.set_result(None)
        else:
            self.fut.set_exception(error)


class SpanWrites:
    """``add_span``/``add_many_spans`` for :class:`~lightspan.store.core.store.CoreStore`."""

    group_commit: bool
    auto_register_rollouts: bool
    auto_rollout_timeout: float | None
    _span_jobs: list[SpanJob]
    _span_flusher: asyncio.Task[None] | None

    async def add_span(self, span: Span) -> Span | None:
        result = await self.add_many_spans([span])
        outcome = result.outcomes[0]
        if outcome.status == "rejected":
            raise NotFoundError(outcome.reason or "span rejected")
        return outcome.span.to_span() if outcome.status == "stored" else None

    async def add_many_spans(
        self,
        spans: Sequence[Span | SpanRow],
        *,
        assign_sequence_ids: Collection[int] = (),
        then: Callable[[StoreTx], Awaitable[Any]] | None = None,
    ) -> AddSpansResult:
        """Store spans: :class:`SpanRow` objects (the OTLP intake; a row whose
        ``sequence_id_pending`` is set gets an id issued) or ``Span`` models (the v0.3 API;
        ``assign_sequence_ids`` says which get one, and the issued id is written into them).
        Models become rows here: everything below sees rows only.

        ``then(tx)``: more writes in the transaction that stores these spans, after them, so
        that they commit together or not at all (a runner's statuses: readers never see one
        without its spans); its result is in :attr:`AddSpansResult.then_result`. It runs
        even when no span is left to store (in its own transaction)."""
        rows, models = _as_rows(spans, assign_sequence_ids)
        result = await self.add_span_rows(rows, then=then)
        for i, model in models:  # the v0.3 API: issued ids are written into the models
            model.sequence_id = rows[i].sequence_id
        return result

    async def add_span_rows(
        self,
        spans: list[SpanRow],
        *,
        groups: RowGroups | None = None,
        then: Callable[[StoreTx], Awaitable[Any]] | None = None,
    ) -> AddSpansResult:
        """:meth:`add_many_spans` for rows (the intake's way in); ``groups``: the rows per
        attempt when the converter computed them (``Converted.groups``), else grouped here."""
        if groups is None:
            groups = group_rows(spans)
        outcomes: list[SpanOutcome | None] = [None] * len(spans)
        if not groups.clean:  # rows without an owner, or a span twice: sorted out first
            seen: set[tuple[str, str, str]] = set()
            candidates: list[int] = []
            for i, s in enumerate(spans):
                key = (s.rollout_id, s.attempt_id, s.span_id)
                if not s.rollout_id or not s.attempt_id:
                    outcomes[i] = SpanOutcome("rejected", s, "span has no rollout_id or attempt_id")
                    continue
                if key in seen:
                    outcomes[i] = SpanOutcome("duplicate", s)
                    continue
                seen.add(key)
                candidates.append(i)
            groups = group_rows(spans, candidates)
        job = SpanJob(spans, groups.groups, outcomes, then=then)
        if job.groups and self.group_commit:
            await self._group_add(job)
        elif job.groups or then is not None:
            async with self._tx(write=True) as tx:
                await self._add_spans_tx(tx, job)
        if job.all_stored:
            result = AddSpansResult.all_stored(spans)  # type: ignore[arg-type]
        else:
            result = AddSpansResult([o for o in outcomes if o is not None])
        result.then_result = job.then_result
        return result

    async def _group_add(self, job: SpanJob) -> None:
        """Group commit: span batches that arrive while a transaction is running are stored
        together in the next one, so N concurrent batches cost one commit (one fsync), not N.
        Each caller still returns only after the transaction holding its spans committed."""
        job.fut = asyncio.get_running_loop().create_future()
        self._span_jobs.append(job)
        if self._span_flusher is None or self._span_flusher.done():
            self._span_flusher = asyncio.get_running_loop().create_task(self._flush_span_jobs())
        await job.fut

    async def _flush_span_jobs(self) -> None:
        while self._span_jobs:
            jobs, self._span_jobs = self._span_jobs, []
            try:
                async with self._tx(write=True) as tx:
                    for job in jobs:
                        await self._add_spans_tx(tx, job)
            except Exception:
                # Something in the group failed: redo each batch in its own transaction, so
                # that only the failing caller sees the error.
                for job in jobs:
                    job.all_stored = False
                    for group in job.groups.values():
                        for i in group.indices:
                            job.outcomes[i] = None
                    try:
                        async with self._tx(write=True) as tx:
                            await self._add_spans_tx(tx, job)
                    except Exception as e:
                        job.finish(e)
                    else:
                        job.finish(None)
                continue
            for job in jobs:
                job.finish(None)

    async def _add_spans_tx(self, tx: StoreTx, job: SpanJob) -> None:
        if job.groups:
            await self._add_candidates_tx(tx, job)
        if job.then is not None:
            job.then_result = await job.then(tx)

    async def _add_candidates_tx(self, tx: StoreTx, job: SpanJob) -> None:
        # The spans are handled per attempt (``RowGroups``, computed by the Rust converter for
        # the OTLP intake): the rules read no span's fields but the few they need.
        spans, outcomes, groups = job.spans, job.outcomes, job.groups
        now = time.time()
        rollout_ids = sorted({r for r, _ in groups})
        rollouts = await tx.get_rollouts(rollout_ids, for_update=True)
        pairs = sorted(groups)
        attempts = await tx.get_attempts(pairs)
        latest = await tx.latest_attempts([r for r in rollout_ids if r in rollouts])

        # Our extension: register unknown rollouts (and, for those, unknown attempts).
        for rollout_id, attempt_id in pairs:
            if (rollout_id, attempt_id) in attempts:
                continue
            rollout = rollouts.get(rollout_id)
            if rollout is None and not self.auto_register_rollouts:
                continue
            if rollout is not None and not (rollout.metadata or {}).get(lc.AUTO_REGISTERED_KEY):
                continue
            first = min(
                (spans[i] for (r, _), g in groups.items() if r == rollout_id for i in g.indices),
                key=lambda s: s.start_time if s.start_time is not None else now,
            )
            start = min(first.start_time or now, now)
            if rollout is None:
                rollout = Rollout(
                    rollout_id=rollout_id,
                    input=None,
                    start_time=start,
                    status="running",
                    config=RolloutConfig(timeout_seconds=self.auto_rollout_timeout),
                    metadata={lc.AUTO_REGISTERED_KEY: True},
                )
                await tx.insert_rollouts([rollout], if_absent=True)
                rollout = (await tx.get_rollouts([rollout_id], for_update=True))[rollout_id]
                rollouts[rollout_id] = rollout
            # Read under the rollout's lock: another server may have registered attempts.
            prev = (await tx.latest_attempts([rollout_id])).get(rollout_id)
            attempt = Attempt(
                rollout_id=rollout_id,
                attempt_id=attempt_id,
                sequence_id=(prev.sequence_id if prev else 0) + 1,
                start_time=start,
                status="running",
            )
            await tx.insert_attempt(attempt, if_absent=True)
            got = await tx.get_attempts([(rollout_id, attempt_id)])
            attempts[(rollout_id, attempt_id)] = got[(rollout_id, attempt_id)]
            latest = {**latest, **await tx.latest_attempts([rollout_id])}

        accepted_groups: dict[tuple[str, str], list[int]] = {}
        max_seq: dict[str, int] = {}
        need: dict[str, list[int]] = {}
        for key, group in groups.items():
            rollout_id, attempt_id = key
            if rollout_id not in rollouts:
                reason = f"rollout {rollout_id!r} not found"
            elif key not in attempts:
                reason = f"attempt {attempt_id!r} not found for rollout {rollout_id!r}"
            else:
                idxs = accepted_groups[key] = group.indices
                # Sequence ids: ids carried by spans move the rollout's counter up; spans that
                # asked for one get the next ids, issued in this transaction, in arrival order.
                if group.pending == len(idxs):
                    need.setdefault(rollout_id, []).extend(idxs)
                elif group.pending:
                    need.setdefault(rollout_id, []).extend(
                        i for i in idxs if spans[i].sequence_id_pending
                    )
                if group.max_carried is not None:
                    max_seq[rollout_id] = max(max_seq.get(rollout_id, 0), group.max_carried)
                continue
            for i in group.indices:
                outcomes[i] = SpanOutcome("rejected", spans[i], reason)
        if not accepted_groups:
            return
        n_accepted = sum(len(g) for g in accepted_groups.values())
        await tx.raise_span_seqs(max_seq)
        for rollout_id, idxs in sorted(need.items()):
            if len(accepted_groups) > 1:
                idxs.sort()  # back to arrival order across the rollout's attempts
            top = await tx.bump_span_seq(rollout_id, len(idxs))
            first_seq = top - len(idxs) + 1
            for k, i in enumerate(idxs):
                spans[i].sequence_id = first_seq + k

        inserted = await tx.insert_spans(
            {key: [spans[i] for i in idxs] for key, idxs in accepted_groups.items()}
        )
        new_groups: dict[tuple[str, str], list[int]]
        if sum(len(ids) for ids in inserted.values()) == n_accepted:  # no duplicates: common
            if n_accepted == len(spans):
                job.all_stored = True
            else:
                for idxs in accepted_groups.values():
                    for i in idxs:
                        outcomes[i] = SpanOutcome("stored", spans[i])
            new_groups = accepted_groups
        else:
            new_groups = {}
            for key, idxs in accepted_groups.items():
                ids = inserted.get(key, ())
                for i in idxs:
                    s = spans[i]
                    if s.span_id in ids:
                        outcomes[i] = SpanOutcome("stored", s)
                        new_groups.setdefault(key, []).append(i)
                    else:
                        outcomes[i] = SpanOutcome("duplicate", s)
        if not new_groups:
            return

        # Heartbeat and status of each attempt that received spans. The heartbeats are saved
        # together (one statement), before any rollout write so the order of writes is kept.
        heartbeats: list[Attempt] = []
        for (rollout_id, attempt_id), idxs in new_groups.items():
            rollout = rollouts[rollout_id]
            attempt = attempts[(rollout_id, attempt_id)]
            update: dict[str, Any] = {"last_heartbeat_time": now}
            if attempt.status in ("preparing", "unresponsive"):
                update["status"] = "running"
            attempt = attempt.model_copy(update=update)
            is_latest = latest.get(rollout_id) is not None and (
                latest[rollout_id].attempt_id == attempt_id
            )
            auto = bool((rollout.metadata or {}).get(lc.AUTO_REGISTERED_KEY))
            rollout_moves = is_latest and rollout.status in ("preparing", "queuing", "requeuing")
            if heartbeats and (auto or rollout_moves):
                await tx.save_attempts(heartbeats)
                heartbeats = []
            if rollout_moves:
                rollout = await self._set_rollout_status(tx, rollout, "running", now)
            if auto:
                # Only root spans (no parent) carry a run's input and its verdict: one cheap
                # pass over the attempt's spans, the two readers then see its few roots.
                roots = [spans[i] for i in idxs if not spans[i].parent_id]
                found = None
                if rollout.input is None:  # the run's root span carries it (once per rollout)
                    found = next(
                        (f for s in roots if (f := lc.production_input(s)) is not None), None
                    )
                if found is not None:
                    row, extra = found
                    rollout = rollout.model_copy(
                        update={"input": row, "metadata": {**rollout.metadata, **extra}}
                    )
                    await tx.save_rollout(rollout)
                verdicts = [v for s in roots if (v := lc.root_span_verdict(s)) is not None]
                if verdicts and attempt.status not in lc.ENDED_ATTEMPT_STATUSES:
                    attempt = attempt.model_copy(update={"status": verdicts[-1], "end_time": now})
                    await tx.save_attempt(attempt)
                    if is_latest:
                        rollout = await self._propagate(tx, rollout, attempt, attempt, now)
                    rollouts[rollout_id] = rollout
                    continue
                await tx.save_attempt(attempt)
            else:
                heartbeats.append(attempt)
            rollouts[rollout_id] = rollout
        await tx.save_attempts(heartbeats)
