"""The engine listener that turns a workflow run into one OpenTelemetry trace.

Why a listener (and not wrappers around steps): the engine reports every step, branch, worker
item and LLM call with its parent, in the asyncio task that runs it, so the span tree follows
the engine's own structure and a step's span can be made current for exactly the code that
step runs (user code's own spans, httpx/openai instrumentation, sync tasks in threads).

Span tree of a run (names; see docs/instrumentation.md for the attributes)::

    invoke_workflow <workflow>             root, gen_ai.operation.name=invoke_workflow
      <kind> <step>                        one per step: task, sequence, fork, llm, ...
        <kind> <branch step>               a fork's children: one per branch (lightspan.branch.name)
        <kind> <worker step>[i]            an organizer's: one per item (lightspan.worker.index)
          openai.chat.completion           one per LLM call (GenAI conventions)
      agentlightning.annotation            the reward, agentlightning.reward.0.*

A branch (worker item) and the one step it runs are a single span: the engine reports both,
but a second span with the same extent would double the cost of fork-heavy workflows and
tell nothing new; the step's span carries the branch name (worker index) instead.

Per-event cost is kept small: a run that is sampled out creates no step spans at all (its
root's context is current, so user spans below it are sampled out too) and asks the engine for
no step events (``ignore_steps``: the engine then runs its steps as if unobserved), attribute
keys are prepared once, and the per-step state is one tuple in ``StepInfo.data``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer

from lightspan.engine.events import BaseListener, LLMCallInfo, RunInfo, StepInfo, ignore_steps
from lightspan.instrumentation.enrich import ROLLOUT_IDS_KEY
from lightspan.instrumentation.sampling import KEEP_ATTRIBUTE
from lightspan.semconv import ANNOTATION_SPAN, ATTEMPT_ID, REWARD_NAME, REWARD_VALUE, ROLLOUT_ID

LLM_SPAN = "openai.chat.completion"
"""Agent Lightning's adapters find LLM calls by this name (regex ``openai\\.chat\\.completion``)."""
RUNNER_MODES = frozenset({"train", "val"})
CLAIM_KEY = "lightspan.span_listener"
"""``RunInfo.data`` key: the span listener that traces the run. The first span listener to see
a run claims it and the others leave it alone, so a runner's own pipeline (a per-run listener,
notified first) and a process-wide instrumentation never trace one run twice."""

_SAMPLING_ATTRS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}


class _Run:
    """What the listener keeps about one run (in ``RunInfo.data[listener]``)."""

    __slots__ = ("capture", "common", "ctx", "errors", "recording", "span", "token", "trace_id")

    def __init__(self) -> None:
        self.errors: dict[int, BaseException] = {}
        """Exceptions already recorded on a span, by id: recorded where raised, not re-recorded."""


def new_rollout_ids() -> tuple[str, str]:
    """Fresh ids in Agent Lightning's format (``ro-`` + 12 hex, ``at-`` + 8 hex)."""
    h = uuid.uuid4().hex
    return f"ro-{h[:12]}", f"at-{h[12:20]}"


def is_runner_run(run: RunInfo) -> bool:
    """A run that a runner started for an optimizer: always traced, content always captured."""
    return run.rollout_id is not None or run.mode in RUNNER_MODES


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class SpanListener(BaseListener):
    """Creates, attaches and ends the spans of every run it observes (see the module doc)."""

    def __init__(
        self,
        tracer: Tracer,
        *,
        capture_content: bool = False,
        capture_runner_content: bool = True,
        suppress_client_spans: bool = False,
    ) -> None:
        self.tracer = tracer
        self.capture_content = capture_content
        """Record prompts and completions on every run's LLM spans."""
        self.capture_runner_content = capture_runner_content
        """Record them on runner rollouts even when ``capture_content`` is off (training data)."""
        self.suppress_client_spans = suppress_client_spans
        """Suppress OpenTelemetry client instrumentation (openai, httpx) inside our LLM spans:
        where another tracer instruments the openai client (Agent Lightning's AgentOps tracer),
        its span of the same call would be a second LLM call to the adapters."""
        self._prefixed: dict[str, str] = {}
        self._servers: dict[str, tuple[str | None, int | None]] = {}

    # -- runs ----------------------------------------------------------------------------------

    def on_run_start(self, run: RunInfo) -> None:
        if run.data.setdefault(CLAIM_KEY, self) is not self:
            ignore_steps(run, self)
            return
        runner = is_runner_run(run)
        capture = self.capture_content or (runner and self.capture_runner_content)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": run.workflow,
            "lightspan.run.id": run.run_id,
            "lightspan.rollout.origin": "runner" if run.rollout_id is not None else "production",
        }
        if run.rollout_id is not None:
            attrs[ROLLOUT_ID] = run.rollout_id
        if run.mode is not None:
            attrs["lightspan.rollout.mode"] = run.mode
        if run.resources is not None:
            attrs["lightspan.resources_id"] = run.resources.resources_id
        if runner:
            attrs[KEEP_ATTRIBUTE] = True
        elif run.rollout_id is None:
            _production_input(attrs, run, capture)
        # One trace per run; a surrounding span (e.g. an HTTP request) is linked, not a parent.
        outer = trace.get_current_span().get_span_context()
        links = (Link(outer),) if outer.is_valid else None
        span = self.tracer.start_span(
            f"invoke_workflow {run.workflow}",
            context=otel_context.Context(),
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            links=links,
        )
        state = _Run()
        state.span = span
        state.recording = span.is_recording()
        state.trace_id = span.get_span_context().trace_id
        state.capture = capture
        ctx = trace.set_span_in_context(span)
        if state.recording:
            # Every traced run is a rollout: one that no runner started gets ids of its own
            # (also on its RunResult), and the store registers it on first sight.
            if run.rollout_id is None:
                run.rollout_id, generated_attempt = new_rollout_ids()
                run.attempt_id = run.attempt_id or generated_attempt
            elif run.attempt_id is None:
                run.attempt_id = new_rollout_ids()[1]
            state.common = {ROLLOUT_ID: run.rollout_id, ATTEMPT_ID: run.attempt_id}
            span.set_attributes(state.common)
            # The ids ride in the context too, for spans that other code opens inside the run.
            ctx = otel_context.set_value(ROLLOUT_IDS_KEY, state.common, ctx)
        else:
            # Sampled out: no step spans, so no step events either (the engine then builds none).
            ignore_steps(run, self)
        state.ctx = ctx
        state.token = otel_context.attach(ctx)
        run.data[self] = state

    def on_run_end(self, run: RunInfo) -> None:
        state: _Run | None = run.data.get(self)
        if state is None:
            return
        otel_context.detach(state.token)
        span = state.span
        if not state.recording:
            span.end()
            return
        if run.reward is not None:
            reward = self.tracer.start_span(
                ANNOTATION_SPAN,
                context=state.ctx,
                attributes={
                    **state.common,
                    REWARD_NAME: "primary",
                    REWARD_VALUE: float(run.reward),
                },
            )
            reward.end()
            span.set_attribute("lightspan.reward", float(run.reward))
        span.set_attribute("lightspan.run.status", run.status)
        self._finish(span, run.status, run.error, state)
        span.end()
        state.errors.clear()

    # -- steps ---------------------------------------------------------------------------------

    def on_step_start(self, step: StepInfo) -> None:
        state: _Run | None = step.run.data.get(self)
        if state is None or not state.recording:
            return
        kind = step.kind
        if kind in _WRAPPERS:
            # A branch or a worker item wraps exactly one execution of one step: that step's
            # span is the branch's (worker's) span, and carries its attributes (see below).
            return
        parent = step.parent
        name = step.name
        attrs = {"lightspan.step.kind": kind, "lightspan.step.name": name, **state.common}
        if parent is None:
            pctx = state.ctx
        else:
            if parent.kind in _WRAPPERS:
                for k, v in parent.attrs.items():
                    key = _WRAPPER_ATTRS.get(k)  # fork/organizer names: that is the parent span
                    if key is not None:
                        attrs[key] = v
                if parent.kind == "worker":
                    name = parent.name  # "work[3]": one span per item
                parent = parent.parent
            pctx = state.ctx if parent is None else parent.data.get(self, _NO_STEP)[1] or state.ctx
        span = self.tracer.start_span(f"{kind} {name}", context=pctx, attributes=attrs)
        ctx = trace.set_span_in_context(span, pctx)
        step.data[self] = (span, ctx, otel_context.attach(ctx))

    def on_step_retry(self, step: StepInfo, error: BaseException, delay: float) -> None:
        entry = step.data.get(self)
        if entry is None:
            return
        entry[0].add_event(
            "lightspan.step.retry",
            {
                "lightspan.step.attempt": step.attempts,
                "lightspan.retry.delay_s": delay,
                "exception.type": type(error).__name__,
                "exception.message": str(error),
            },
        )

    def on_step_end(self, step: StepInfo) -> None:
        entry = step.data.get(self)
        if entry is None:
            return
        span, _ctx, token = entry
        otel_context.detach(token)
        if step.attrs:
            span.set_attributes(self._prefix(step.attrs))
        if step.attempts > 1:
            span.set_attribute("lightspan.step.attempts", step.attempts)
        if step.status != "ok":
            self._finish(span, step.status, step.error, step.run.data[self])
        span.end()

    # -- LLM calls ------------------------------------------------------------------------------

    def on_llm_start(self, call: LLMCallInfo) -> None:
        state: _Run | None = call.run.data.get(self)
        if state is None or not state.recording:
            return
        # The current context is the step's span, or a span the task's own code opened.
        pctx = otel_context.get_current()
        if trace.get_current_span(pctx).get_span_context().trace_id != state.trace_id:
            step = call.step
            entry = step.data.get(self) if step is not None else None
            pctx = entry[1] if entry is not None else state.ctx
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": call.provider,
            "gen_ai.request.model": call.request_model,
            **state.common,
        }
        address, port = self._server(call.endpoint)
        if address:
            attrs["server.address"] = address
        if port:
            attrs["server.port"] = port
        if call.max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = call.max_tokens
        for k, v in call.sampling.items():
            key = _SAMPLING_ATTRS.get(k)
            if key is not None and isinstance(v, int | float):
                attrs[key] = v
        if call.resources_id is not None:
            attrs["lightspan.resources_id"] = call.resources_id
        if call.prompt_template is not None:
            attrs["lightspan.llm.prompt_template"] = call.prompt_template
        if call.llm_resource is not None:
            attrs["lightspan.llm.resource"] = call.llm_resource
        step_name = call.step.name if call.step is not None else call.step_name
        if step_name is not None:
            attrs["lightspan.step.name"] = step_name
        if state.capture:
            for i, m in enumerate(call.messages):
                attrs[f"gen_ai.prompt.{i}.role"] = str(m.get("role", ""))
                attrs[f"gen_ai.prompt.{i}.content"] = _content(m.get("content"))
        span = self.tracer.start_span(
            LLM_SPAN, context=pctx, kind=SpanKind.CLIENT, attributes=attrs
        )
        ctx = trace.set_span_in_context(span, pctx)
        if self.suppress_client_spans:
            ctx = otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, ctx)
        call.data[self] = (span, otel_context.attach(ctx))

    def on_llm_end(self, call: LLMCallInfo) -> None:
        entry = call.data.get(self)
        if entry is None:
            return
        span, token = entry
        otel_context.detach(token)
        state: _Run = call.run.data[self]
        if call.status == "ok":
            attrs: dict[str, Any] = {
                "gen_ai.usage.input_tokens": call.input_tokens,
                "gen_ai.usage.output_tokens": call.output_tokens,
                "gen_ai.response.finish_reasons": list(call.finish_reasons),
                "lightspan.llm.cost": call.cost,
                "lightspan.llm.priced": call.priced,
            }
            if call.response_id is not None:
                attrs["gen_ai.response.id"] = call.response_id
            if call.response_model is not None:
                attrs["gen_ai.response.model"] = call.response_model
            # Agent Lightning's TracerTraceToTriplet reads these two keys: with them a call is
            # a trainable (prompt, response, reward) triplet for VERL.
            if call.prompt_token_ids is not None:
                attrs["prompt_token_ids"] = call.prompt_token_ids
            if call.response_token_ids is not None:
                attrs["response_token_ids"] = call.response_token_ids
            if state.capture and call.completion is not None:
                attrs["gen_ai.completion.0.role"] = "assistant"
                attrs["gen_ai.completion.0.content"] = call.completion
                if call.finish_reasons:
                    attrs["gen_ai.completion.0.finish_reason"] = call.finish_reasons[0]
            span.set_attributes(attrs)
        else:
            if call.estimated:
                span.set_attributes(
                    {
                        "gen_ai.usage.input_tokens": call.input_tokens,
                        "gen_ai.usage.output_tokens": call.output_tokens,
                        "lightspan.llm.cost": call.cost,
                        "lightspan.llm.priced": call.priced,
                        "lightspan.llm.usage_estimated": True,
                    }
                )
            self._finish(span, call.status, call.error, state)
        span.end()

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _finish(span: Any, status: str, error: BaseException | None, state: _Run) -> None:
        """Error: record the exception where it was raised, ERROR on every span it crossed.
        Cancelled: marked as such, status left UNSET (a cancelled branch is not a failure)."""
        if status == "cancelled":
            span.set_attribute("lightspan.cancelled", True)
            return
        if status != "error" or error is None:
            return
        if id(error) not in state.errors:
            state.errors[id(error)] = error
            span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, _describe(error)))

    def _prefix(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Engine facts (``join.policy``...) as span attributes (``lightspan.join.policy``...)."""
        prefixed = self._prefixed
        out = {}
        for k, v in attrs.items():
            key = prefixed.get(k)
            if key is None:
                key = prefixed[k] = f"lightspan.{k}"
            out[key] = v
        return out

    def _server(self, endpoint: str) -> tuple[str | None, int | None]:
        found = self._servers.get(endpoint)
        if found is None:
            try:
                parts = urlsplit(endpoint)
                found = (parts.hostname, parts.port)
            except ValueError:
                found = (None, None)
            self._servers[endpoint] = found
        return found


_NO_STEP: tuple[None, None, None] = (None, None, None)
_WRAPPERS = frozenset({"branch", "worker"})
_WRAPPER_ATTRS = {"branch.name": "lightspan.branch.name", "worker.index": "lightspan.worker.index"}


def _content(value: Any) -> str:
    """A message's content as text (multi-part contents are joined by their text parts)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in value)
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _production_input(attrs: dict[str, Any], run: RunInfo, capture: bool) -> None:
    """A production run's input (and expected value, when the caller gave one) on its root span:
    the JSON itself when content capture is on, else a SHA-256 digest (equal inputs, equal
    digests: enough to count repeats without keeping the content)."""
    values = {"input": run.input}
    if run.expected is not None:
        values["expected"] = run.expected
    for key, value in values.items():
        text = _json(value)
        if capture:
            attrs[f"lightspan.rollout.{key}"] = text
        else:
            attrs[f"lightspan.rollout.{key}_digest"] = (
                "sha256:" + hashlib.sha256(text.encode()).hexdigest()
            )
