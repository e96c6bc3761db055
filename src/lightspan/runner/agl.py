"""A lightspan workflow as an Agent Lightning ``LitAgent``: ``LitWorkflow(workflow)``.

Why a wrapper in Agent Lightning's own process: a team that already trains with
``agl.Trainer(algorithm=..., n_runners=N).fit(agent, train_dataset=...)`` keeps its trainer,
store and tracer, and only swaps its agent for a lightspan workflow. Agent Lightning's runner
dequeues the rollout, fetches its resources and opens its tracer's trace context; the wrapper
runs the workflow inside it and lets lightspan's span listener write the workflow's spans (LLM
calls with ``gen_ai.prompt/completion`` and token ids, the reward annotation) through the
tracer's own OpenTelemetry provider, so they reach agl's store exactly as agl's own spans do,
with its default ``AgentOpsTracer`` or with ``OtelTracer``.

Resources agl passes overlay the workflow's own set through the runner's
:func:`~lightspan.runner.resources.overlay` (by name; ``main_llm``, VERL's LLM, stands for the
workflow's ``default`` LLM; a ``ProxyLLM`` is routed for the attempt), so APO's prompt template
or VERL's proxy LLM are what the run uses, and every other resource stays as the workflow says.

Importable only where ``agentlightning`` is installed (it is not a lightspan dependency).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    import agentlightning as agl
    from agentlightning.types import NamedResources, Rollout
except ImportError as _e:  # pragma: no cover - exercised in the lightspan venv, see tests
    raise ImportError(
        "lightspan.runner.agl needs Agent Lightning: pip install 'agentlightning==0.3.0' "
        "(it is not a lightspan dependency; lightspan's own runner is lightspan.runner)"
    ) from _e

from opentelemetry import trace

from lightspan.engine.resources import ResourceSet
from lightspan.engine.runtime import RunResult, Workflow
from lightspan.instrumentation.listener import SpanListener
from lightspan.runner.inputs import InputMapping
from lightspan.runner.resources import ResourcesProvider as StoreResources
from lightspan.runner.resources import overlay

__all__ = ["LitWorkflow", "WorkflowRolloutError"]


class WorkflowRolloutError(RuntimeError):
    """The workflow run failed: raised so agl's runner marks the attempt ``failed``."""


class LitWorkflow(agl.LitAgent[Any]):
    """Runs a lightspan :class:`~lightspan.engine.Workflow` for each rollout agl hands it.

    * Input: ``inputs`` (:class:`~lightspan.runner.InputMapping`): ``{"input": X, "expected":
      Y}`` runs ``X`` with ``Y`` for the evaluator; a flat dict with the expected key runs the
      dict without that key.
    * Resources: agl's set overlays the workflow's latest set (see the module doc); the run's
      ``resources_id`` is agl's, so spans say which published version produced them.
    * Spans and reward: written through agl's tracer (the rollout's trace context); the
      evaluator's reward is the ``agentlightning.annotation`` span, so the rollout returns
      ``None`` (agl then takes the spans as they are, no second reward span).
    * Failure: a failed run raises :class:`WorkflowRolloutError` after its spans are written,
      so agl marks the attempt ``failed`` and the store's retry policy applies.
    """

    def __init__(
        self,
        workflow: Workflow,
        *,
        inputs: InputMapping | None = None,
    ) -> None:
        super().__init__()
        self.workflow = workflow
        self.inputs = inputs or InputMapping()
        """Rollout input -> ``(input, expected)`` (lightspan's rows or agl's flat dicts)."""
        self.last_result: RunResult | None = None
        self._listeners: dict[int, SpanListener] = {}

    # -- agl's entry point ---------------------------------------------------------------------

    async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> None:
        inp, expected = self.inputs(task)
        attempt = getattr(rollout, "attempt", None)
        attempt_id = attempt.attempt_id if attempt is not None else None
        resource_set = await self.resources_for(
            resources, rollout.resources_id, rollout.rollout_id, attempt_id
        )
        result = await self.workflow.run(
            inp,
            expected=expected,
            rollout_id=rollout.rollout_id,
            attempt_id=attempt_id,
            mode=rollout.mode,
            resources=resource_set,
            listeners=(self._listener(),),
        )
        self.last_result = result
        if not result.ok:
            raise WorkflowRolloutError(
                f"workflow {self.workflow.name!r} failed on rollout {rollout.rollout_id}: "
                f"{result.error!r}"
            ) from result.error
        return None

    # -- pieces --------------------------------------------------------------------------------

    async def resources_for(
        self,
        resources: Mapping[str, Any] | None,
        resources_id: str | None,
        rollout_id: str | None = None,
        attempt_id: str | None = None,
    ) -> ResourceSet:
        """The workflow's own set with agl's laid over it (:func:`lightspan.runner.overlay`:
        by name, ``main_llm`` -> ``default``, ``proxy_llm`` routed for this attempt)."""
        provider = self.workflow.resources
        if isinstance(provider, StoreResources):
            provider = provider.base  # agl's store is the source here, not lightspan's
        base = await provider.get_resources(None)
        if not resources:
            return base
        return overlay(
            base,
            resources,
            resources_id or base.resources_id,
            rollout_id=rollout_id,
            attempt_id=attempt_id,
        )

    def _listener(self) -> SpanListener:
        """One span listener per OpenTelemetry provider: the tracer's provider, where agl's
        span processor (or its OTLP exporter) sends spans to the rollout's store."""
        provider = _provider(self)
        listener = self._listeners.get(id(provider))
        if listener is None:
            listener = SpanListener(
                provider.get_tracer("lightspan.runner.agl"),
                capture_runner_content=True,
                suppress_client_spans=True,
            )
            self._listeners[id(provider)] = listener
        return listener


def _provider(agent: agl.LitAgent[Any]) -> Any:
    """agl's tracer provider: the tracer's own (``OtelTracer``/``AgentOpsTracer`` keep it
    private), else the global one, which both tracers also install."""
    try:
        return agent.tracer._get_tracer_provider()
    except Exception:
        return trace.get_tracer_provider()
