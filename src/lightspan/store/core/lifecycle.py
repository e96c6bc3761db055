"""The status rules of rollouts, attempts and workers, as pure functions shared by all backends.

Why pure functions: the rules (retries, health verdicts, worker status, the root-span rule of
auto-registered rollouts) must be identical in every backend, and they are the part of the store
most worth testing in isolation. The rules are Agent Lightning v0.3's except where marked.
"""

from __future__ import annotations

import json
from typing import Any

from lightspan.store.api.models import (
    FINISHED_ROLLOUT_STATUSES,
    RUNNING_ROLLOUT_STATUSES,
    Attempt,
    AttemptStatus,
    Rollout,
    RolloutConfig,
    RolloutStatus,
    Worker,
)
from lightspan.store.intake.span_row import SpanRow

AUTO_REGISTERED_KEY = "lightspan.auto_registered"
"""Rollout metadata key marking a rollout registered from its spans (our extension)."""

ENDED_ATTEMPT_STATUSES: frozenset[str] = frozenset({"succeeded", "failed"})
"""Attempt statuses that set ``end_time`` (v0.3: timeout/unresponsive do not)."""


def rollout_status_from_attempt(attempt: Attempt, config: RolloutConfig) -> RolloutStatus:
    """The rollout status implied by its latest attempt's status.

    ``failed``/``timeout``/``unresponsive`` requeue the rollout only if that status is in
    ``retry_condition`` and attempts remain (``sequence_id < max_attempts``); otherwise ``failed``.
    """
    status = attempt.status
    if status in ("preparing", "running", "succeeded"):
        return status  # type: ignore[return-value]
    if status in ("failed", "timeout", "unresponsive"):
        if status in config.retry_condition and attempt.sequence_id < config.max_attempts:
            return "requeuing"
        return "failed"
    raise ValueError(f"invalid attempt status {status!r}")


def is_finished(rollout: Rollout) -> bool:
    return rollout.status in FINISHED_ROLLOUT_STATUSES


def health_verdict(rollout: Rollout, attempt: Attempt, now: float) -> AttemptStatus | None:
    """``timeout``/``unresponsive`` if the rollout's running latest attempt has exceeded its
    config's limits at ``now``, else ``None``.

    Timeout counts from the attempt's start; unresponsiveness from its last heartbeat (a span or
    an explicit heartbeat), or from its start if it never sent one.
    """
    config = rollout.config
    if config.timeout_seconds is not None and now - attempt.start_time > config.timeout_seconds:
        return "timeout"
    if config.unresponsive_seconds is not None:
        since = attempt.last_heartbeat_time or attempt.start_time
        if now - since > config.unresponsive_seconds:
            return "unresponsive"
    return None


HEALTH_DUE_SLACK = 1e-3
"""Seconds the health scan looks ahead of ``now`` when it asks the index for due rollouts: a due
time computed as ``start + limit`` can round one unit in the last place above the instant
:func:`health_verdict` (which computes ``now - start > limit``) first says yes; the slack makes
such a rollout an early candidate instead of a missed one."""


def health_due_time(
    status: str,
    timeout_seconds: float | None,
    unresponsive_seconds: float | None,
    attempt: Attempt,
) -> float | None:
    """The earliest time at which :func:`health_verdict` can mark ``attempt`` (the latest of a
    rollout in ``status`` with these config limits), or ``None`` when it never can (the rollout
    is not running, or neither limit is set).

    Why: the backends keep this value beside each attempt, indexed, so the health scan reads
    the rollouts that are due instead of every running one. It is recomputed wherever the
    attempt or its rollout is written; a stale (earlier) value only makes an extra candidate,
    which the scan re-checks with :func:`health_verdict` under the rollout's lock."""
    if status not in RUNNING_ROLLOUT_STATUSES:
        return None
    due: float | None = None
    if timeout_seconds is not None:
        due = attempt.start_time + timeout_seconds
    if unresponsive_seconds is not None:
        since = attempt.last_heartbeat_time or attempt.start_time
        due = (
            min(due, since + unresponsive_seconds)
            if due is not None
            else since + unresponsive_seconds
        )
    return due


def worker_after_attempt(
    worker: Worker, attempt: Attempt, now: float, *, dequeue: bool = False
) -> Worker:
    """The worker's record after its attempt changed: ``idle`` once the attempt succeeded or
    failed, ``unknown`` after timeout/unresponsive, otherwise ``busy`` with it."""
    w = worker.model_copy()
    if dequeue:
        w.last_dequeue_time = now
    if attempt.status in ("succeeded", "failed"):
        w.status, w.last_idle_time = "idle", now
        w.current_rollout_id = w.current_attempt_id = None
    elif attempt.status in ("timeout", "unresponsive"):
        w.status, w.last_idle_time = "unknown", now
        w.current_rollout_id = w.current_attempt_id = None
    else:
        w.status, w.last_busy_time = "busy", now
        w.current_rollout_id, w.current_attempt_id = attempt.rollout_id, attempt.attempt_id
    return w


def worker_found_nothing(worker: Worker | None, worker_id: str, now: float) -> Worker:
    """The worker's record after a dequeue that found the queue empty: ``idle``."""
    if worker is None or worker.status != "idle":
        base = worker or Worker(worker_id=worker_id)
        return base.model_copy(
            update={"status": "idle", "last_idle_time": now, "last_dequeue_time": now}
        )
    return worker.model_copy(update={"last_dequeue_time": now})


def root_span_verdict(span: SpanRow) -> AttemptStatus | None:
    """For auto-registered rollouts (our extension): the attempt status that an ended root span
    implies. A root span (no ``parent_id``) that ended with ``ERROR`` -> ``failed``; with ``OK``
    or ``UNSET`` (OpenTelemetry's default for "completed without error") -> ``succeeded``.
    Spans that are not ended roots imply nothing."""
    if span.parent_id or span.end_time is None:
        return None
    return "failed" if span.status_code == "ERROR" else "succeeded"


PRODUCTION_INPUT_PREFIX = "lightspan.rollout."
"""Root-span attributes a traced production run writes (see ``instrumentation/listener.py``):
``lightspan.rollout.input`` / ``.expected`` (JSON, content capture on) or ``.input_digest`` /
``.expected_digest`` (SHA-256, capture off)."""


def production_input(span: SpanRow) -> tuple[Any, dict[str, Any]] | None:
    """For auto-registered rollouts (our extension): the rollout ``input`` and ``metadata``
    entries that a production run's root span carries, so a trainer can re-run or label stored
    production rollouts. The input is a dataset row (``{"input": ..., "expected": ...}``, the
    shape the runner takes) when the content was captured, else ``None`` with the digests in
    the metadata. ``None`` when the span is not a root carrying any of these attributes.

    Why only the root span: the input is written once per run there, and roots are one span
    per rollout, so parsing its document costs nothing measurable on the intake path."""
    if span.parent_id:
        return None
    doc = span.doc_bytes()
    if PRODUCTION_INPUT_PREFIX.encode() not in doc:
        return None
    attributes = json.loads(doc)["attributes"]
    row: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for key in ("input", "expected"):
        text = attributes.get(PRODUCTION_INPUT_PREFIX + key)
        if isinstance(text, str):
            try:
                row[key] = json.loads(text)
            except ValueError:
                row[key] = text
        digest = attributes.get(f"{PRODUCTION_INPUT_PREFIX}{key}_digest")
        if isinstance(digest, str):
            metadata[f"{PRODUCTION_INPUT_PREFIX}{key}_digest"] = digest
    if not row and not metadata:
        return None
    return (row or None), metadata
