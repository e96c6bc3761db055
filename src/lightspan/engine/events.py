"""Lifecycle events: how observers (tracing, metrics, tests) see a workflow run.

Why a listener interface instead of calling OpenTelemetry here: the engine must run, and cost,
exactly as if no tracing existed when nobody observes it. The engine snapshots the registered
listeners once per run; with none, no event object is ever built.

Listener methods are called synchronously on the event loop (or, for sync tasks, before and
after the worker thread runs), in the task that executes the step, so a listener may attach
context (for example an OpenTelemetry span) in ``on_step_start`` and detach it in
``on_step_end``: asyncio tasks and worker threads that the step starts inherit it.
A listener that raises is logged and otherwise ignored: observation never breaks a workflow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from lightspan.engine.resources import ResourceSet
    from lightspan.engine.steps import Step

log = logging.getLogger(__name__)

StepKind = Literal["task", "sequence", "fork", "branch", "organizer_worker", "worker", "llm"]
Status = Literal["running", "ok", "error", "cancelled"]


@dataclass(eq=False, slots=True)
class RunInfo:
    """One workflow run, as observers see it. ``data`` is free for listeners (keyed by owner)."""

    run_id: str
    workflow: str
    input: Any
    expected: Any = None
    rollout_id: str | None = None
    attempt_id: str | None = None
    mode: str | None = None
    """``train``/``val``/``test`` when a runner started the run for an optimizer."""
    resources: ResourceSet | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    start_time: float = field(default_factory=time.time)
    end_time: float | None = None
    status: Status = "running"
    output: Any = None
    error: BaseException | None = None
    reward: float | None = None
    data: dict[Any, Any] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class StepInfo:
    """One execution of a step (a branch of a fork and a worker item count as steps too)."""

    kind: StepKind
    name: str
    run: RunInfo
    parent: StepInfo | None
    step: Step | None = None
    input: Any = None
    output: Any = None
    attrs: dict[str, Any] = field(default_factory=dict)
    """Kind-specific facts: ``branch.name``, ``join.policy``, ``join.winners``,
    ``worker.index``..."""
    attempts: int = 0
    status: Status = "running"
    error: BaseException | None = None
    start_time: float = field(default_factory=time.time)
    end_time: float | None = None
    data: dict[Any, Any] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class LLMCallInfo:
    """One chat-completion call, with what was asked and what came back."""

    step: StepInfo | None
    run: RunInfo
    endpoint: str
    provider: str
    request_model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    resources_id: str | None = None
    prompt_template: str | None = None
    """The prompt resource's name as resolved for the step (``ask@answer`` or ``ask``)."""
    step_name: str | None = None
    llm_resource: str | None = None
    """The LLM resource's name as resolved for the step (``default@answer`` or ``default``)."""
    estimated: bool = False
    """Cancelled before it answered: ``input_tokens``/``output_tokens``/``cost`` are estimates."""
    response_id: str | None = None
    response_model: str | None = None
    completion: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    prompt_token_ids: list[int] | None = None
    """Token ids, when the server returned them (what a trainer such as VERL learns from)."""
    response_token_ids: list[int] | None = None
    cost: float = 0.0
    priced: bool = False
    status: Status = "running"
    error: BaseException | None = None
    start_time: float = field(default_factory=time.time)
    end_time: float | None = None
    data: dict[Any, Any] = field(default_factory=dict)


@runtime_checkable
class EngineListener(Protocol):
    """What an observer implements. Subclass :class:`BaseListener` to implement only some."""

    def on_run_start(self, run: RunInfo) -> None: ...
    def on_run_end(self, run: RunInfo) -> None: ...
    def on_step_start(self, step: StepInfo) -> None: ...
    def on_step_retry(self, step: StepInfo, error: BaseException, delay: float) -> None: ...
    def on_step_end(self, step: StepInfo) -> None: ...
    def on_llm_start(self, call: LLMCallInfo) -> None: ...
    def on_llm_end(self, call: LLMCallInfo) -> None: ...


class BaseListener:
    """A listener that ignores every event; override what you need."""

    def on_run_start(self, run: RunInfo) -> None:
        pass

    def on_run_end(self, run: RunInfo) -> None:
        pass

    def on_step_start(self, step: StepInfo) -> None:
        pass

    def on_step_retry(self, step: StepInfo, error: BaseException, delay: float) -> None:
        pass

    def on_step_end(self, step: StepInfo) -> None:
        pass

    def on_llm_start(self, call: LLMCallInfo) -> None:
        pass

    def on_llm_end(self, call: LLMCallInfo) -> None:
        pass


_lock = threading.Lock()
_listeners: tuple[EngineListener, ...] = ()


def add_listener(listener: EngineListener) -> None:
    """Register a process-wide listener (idempotent). Runs started afterwards see it."""
    global _listeners
    with _lock:
        if listener not in _listeners:
            _listeners = (*_listeners, listener)


def remove_listener(listener: EngineListener) -> None:
    """Unregister a listener; runs already started keep their snapshot."""
    global _listeners
    with _lock:
        _listeners = tuple(x for x in _listeners if x is not listener)


def listeners() -> tuple[EngineListener, ...]:
    """The current listeners (an immutable snapshot)."""
    return _listeners


def emit(targets: tuple[EngineListener, ...], method: str, *args: Any) -> None:
    """Call ``method`` on each listener, logging (not raising) a listener's failure."""
    for listener in targets:
        try:
            getattr(listener, method)(*args)
        except Exception:
            log.exception("lightspan listener %r failed in %s; ignored", listener, method)


_STEPS_IGNORED = "lightspan.engine.steps_ignored"


def ignore_steps(run: RunInfo, listener: EngineListener) -> None:
    """Say, from ``on_run_start``, that ``listener`` wants no step events of ``run`` (a
    sampled-out run, a run another listener traces). When no listener of a run wants them, the
    engine builds no :class:`StepInfo` at all for it and runs its steps as if unobserved."""
    run.data.setdefault(_STEPS_IGNORED, set()).add(id(listener))


def step_listeners(run: RunInfo, targets: tuple[EngineListener, ...]) -> tuple[EngineListener, ...]:
    """``targets`` minus those that called :func:`ignore_steps` for ``run``."""
    ignored = run.data.get(_STEPS_IGNORED)
    if not ignored:
        return targets
    return tuple(x for x in targets if id(x) not in ignored)


def bound(targets: tuple[EngineListener, ...], method: str) -> tuple[Callable[..., Any], ...]:
    """The listeners' ``method``, bound once per run: the step events (two per step) then cost
    a call each, not an attribute lookup by name (see :func:`notify`)."""
    return tuple(getattr(listener, method) for listener in targets)


def notify(methods: tuple[Callable[..., Any], ...], *args: Any) -> None:
    """Call each bound listener method, logging (not raising) a listener's failure."""
    for method in methods:
        try:
            method(*args)
        except Exception:
            log.exception(
                "lightspan listener %r failed in %s; ignored",
                getattr(method, "__self__", method),
                getattr(method, "__name__", "?"),
            )
