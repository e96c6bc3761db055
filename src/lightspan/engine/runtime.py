"""Running a workflow: resources resolved per run, LLM calls accounted, reward computed.

Why a per-run state object: everything a step needs (resources, LLM clients, prices, the
listener snapshot, the records of LLM calls) is reached through one reference, so steps stay
stateless and one workflow object serves any number of concurrent runs.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lightspan.engine import events as _events
from lightspan.engine.errors import EvaluationError, WorkflowDefinitionError
from lightspan.engine.events import (
    EngineListener,
    LLMCallInfo,
    RunInfo,
    StepInfo,
    bound,
    emit,
    step_listeners,
)
from lightspan.engine.llm import ChatClients, PriceTable
from lightspan.engine.resources import LLMResource, ResourceSet, ResourcesProvider, StaticResources
from lightspan.engine.steps import Step

if TYPE_CHECKING:
    from lightspan.config import LightspanConfig

Evaluator = Callable[[Any, Any, Any], Any]
"""``evaluator(input, output, expected) -> float`` (sync or async)."""


@dataclass(slots=True)
class LLMCallRecord:
    """What one LLM call used and cost, kept on the run result."""

    step: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: float
    priced: bool
    latency_s: float
    response_id: str | None = None
    estimated: bool = False
    """Tokens and cost are estimates: the call was cancelled before it answered (a losing
    branch of ``join: first``), so the endpoint reported no usage."""


@dataclass(slots=True)
class RunResult:
    """The outcome of one workflow run."""

    run_id: str
    workflow: str
    input: Any
    output: Any
    status: str
    """``succeeded``, ``failed`` or ``cancelled``."""
    error: BaseException | None
    reward: float | None
    resources_id: str | None
    start_time: float
    end_time: float
    llm_calls: list[LLMCallRecord] = field(default_factory=list)
    rollout_id: str | None = None
    attempt_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def duration_s(self) -> float:
        return self.end_time - self.start_time

    @property
    def input_tokens(self) -> int:
        return sum(c.input_tokens for c in self.llm_calls)

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens for c in self.llm_calls)

    @property
    def cost(self) -> float:
        return sum(c.cost for c in self.llm_calls)

    def raise_for_status(self) -> RunResult:
        if self.error is not None:
            raise self.error
        return self


class TaskContext:
    """What a task function may use besides its input (``fn(value, ctx)``)."""

    __slots__ = ("_info", "_run", "step")

    def __init__(self, run: RunState, step: Step, info: StepInfo | None) -> None:
        self._run = run
        self._info = info
        self.step = step

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    @property
    def resources(self) -> ResourceSet:
        return self._run.resources

    @property
    def input(self) -> Any:
        """The workflow run's input (not this step's)."""
        return self._run.info.input

    async def chat(self, messages: list[dict[str, Any]] | str, *, llm: str = "default") -> str:
        """Call the LLM resource ``llm``; recorded and observed like an LLM task's call."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        res = self._run.resources
        name = res.resolve(llm, self.step.name)
        return await self._run.chat(
            res.llm(name), messages, self._info, step_name=self.step.name, llm_name=name
        )


class RunState:
    """Per-run state shared by all steps of one run."""

    __slots__ = (
        "clients",
        "info",
        "listeners",
        "listeners_reversed",
        "llm_calls",
        "prices",
        "resources",
        "step_end",
        "step_listeners",
        "step_start",
    )

    def __init__(
        self,
        info: RunInfo,
        resources: ResourceSet,
        listeners: tuple[EngineListener, ...],
        clients: ChatClients,
        prices: PriceTable,
    ) -> None:
        self.info = info
        self.resources = resources
        self.listeners = listeners
        self.listeners_reversed = tuple(reversed(listeners))
        self.step_listeners: tuple[EngineListener, ...] = ()
        """The listeners that want this run's step events (set by :meth:`bind_steps`)."""
        self.step_start: tuple[Callable[..., Any], ...] = ()
        self.step_end: tuple[Callable[..., Any], ...] = ()
        self.clients = clients
        self.prices = prices
        self.llm_calls: list[LLMCallRecord] = []

    def bind_steps(self) -> None:
        """After ``on_run_start``: the listeners that want step events, their methods bound."""
        self.step_listeners = step_listeners(self.info, self.listeners)
        self.step_start = bound(self.step_listeners, "on_step_start")
        self.step_end = bound(tuple(reversed(self.step_listeners)), "on_step_end")

    def task_context(self, step: Step, info: StepInfo | None) -> TaskContext:
        return TaskContext(self, step, info)

    async def chat(
        self,
        llm: LLMResource,
        messages: list[dict[str, Any]],
        info: StepInfo | None,
        *,
        step_name: str,
        prompt_template: str | None = None,
        llm_name: str | None = None,
    ) -> str:
        call: LLMCallInfo | None = None
        t0 = time.perf_counter()
        if self.listeners:
            call = LLMCallInfo(
                step=info,
                run=self.info,
                endpoint=llm.endpoint,
                provider=llm.provider,
                request_model=llm.model,
                messages=messages,
                max_tokens=llm.max_tokens,
                sampling=dict(llm.sampling_parameters),
                resources_id=self.resources.resources_id,
                prompt_template=prompt_template,
                step_name=step_name,
                llm_resource=llm_name,
            )
            emit(self.listeners, "on_llm_start", call)
        try:
            res = await self.clients.chat(llm, messages)
        except BaseException as e:
            cancelled = isinstance(e, asyncio.CancelledError)
            if cancelled:
                self._record_cancelled(llm, messages, step_name, time.perf_counter() - t0, call)
            if call is not None:
                call.status = "cancelled" if cancelled else "error"
                call.error = e
                call.end_time = time.time()
                emit(self.listeners_reversed, "on_llm_end", call)
            raise
        cost, priced = self.prices.cost(llm.model, res.input_tokens, res.output_tokens)
        self.llm_calls.append(
            LLMCallRecord(
                step=step_name,
                model=llm.model,
                input_tokens=res.input_tokens,
                output_tokens=res.output_tokens,
                cost=cost,
                priced=priced,
                latency_s=res.latency_s,
                response_id=res.response_id,
            )
        )
        if call is not None:
            call.response_id = res.response_id
            call.response_model = res.response_model
            call.completion = res.content
            call.finish_reasons = res.finish_reasons
            call.input_tokens = res.input_tokens
            call.output_tokens = res.output_tokens
            call.prompt_token_ids = res.prompt_token_ids
            call.response_token_ids = res.response_token_ids
            call.cost = cost
            call.priced = priced
            call.status = "ok"
            call.end_time = time.time()
            emit(self.listeners_reversed, "on_llm_end", call)
        return res.content

    def _record_cancelled(
        self,
        llm: LLMResource,
        messages: list[dict[str, Any]],
        step_name: str,
        elapsed: float,
        call: LLMCallInfo | None,
    ) -> None:
        """Account a cancelled call with estimated usage (see :meth:`ChatClients.estimate`)."""
        input_tokens, output_tokens = self.clients.estimate(llm, messages, elapsed)
        cost, priced = self.prices.cost(llm.model, input_tokens, output_tokens)
        self.llm_calls.append(
            LLMCallRecord(
                step=step_name,
                model=llm.model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost=cost,
                priced=priced,
                latency_s=elapsed,
                estimated=True,
            )
        )
        if call is not None:
            call.input_tokens, call.output_tokens = input_tokens, output_tokens
            call.cost, call.priced, call.estimated = cost, priced, True


class Workflow:
    """A named tree of steps, its resources provider and an optional evaluator.

    One workflow object may run many times concurrently; each run resolves its resources
    (latest, or the ``resources_id`` asked for) and reports to the listeners registered when it
    starts (see :mod:`lightspan.engine.events`).
    """

    def __init__(
        self,
        name: str,
        root: Step,
        *,
        resources: ResourcesProvider | ResourceSet | None = None,
        evaluator: Evaluator | None = None,
        prices: PriceTable | Mapping[str, Any] | None = None,
        llm_timeout_seconds: float = 120.0,
    ) -> None:
        if not isinstance(root, Step):
            raise WorkflowDefinitionError(f"workflow {name!r}: root {root!r} is not a step")
        self.name = name
        self.root = root
        if isinstance(resources, ResourceSet):
            resources = StaticResources(resources)
        self.resources: ResourcesProvider = resources or StaticResources()
        self.evaluator = evaluator
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self._clients = ChatClients(timeout_seconds=llm_timeout_seconds)

    @classmethod
    def from_config(cls, name: str, root: Step, config: LightspanConfig, **kw: Any) -> Workflow:
        """A workflow priced and timed by the configuration's ``llm`` section."""
        kw.setdefault("prices", PriceTable(config.llm.prices))
        kw.setdefault("llm_timeout_seconds", config.llm.timeout_seconds)
        return cls(name, root, **kw)

    async def run(
        self,
        input: Any = None,
        *,
        expected: Any = None,
        resources_id: str | None = None,
        rollout_id: str | None = None,
        attempt_id: str | None = None,
        mode: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        resources: ResourceSet | None = None,
        listeners: Sequence[EngineListener] = (),
    ) -> RunResult:
        """Run once. Failures are captured in the result (``raise_for_status()`` re-raises);
        cancellation of the caller propagates after every child task has stopped.

        ``resources``: an already resolved set (a runner resolves the rollout's own), instead
        of asking the provider for ``resources_id``. ``listeners``: extra listeners for this
        run only, notified before the process-wide ones (a runner's span pipeline)."""
        listeners = (*listeners, *_events.listeners()) if listeners else _events.listeners()
        if resources is None:
            resources = await self.resources.get_resources(resources_id)
        resources = resources.for_input(input)
        if rollout_id is not None and attempt_id is not None:
            resources = resources.for_rollout(rollout_id, attempt_id)
        info = RunInfo(
            run_id=uuid.uuid4().hex,
            workflow=self.name,
            input=input,
            expected=expected,
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            mode=mode,
            resources=resources,
            metadata=dict(metadata or {}),
        )
        state = RunState(info, resources, listeners, self._clients, self.prices)
        if listeners:
            emit(listeners, "on_run_start", info)
            state.bind_steps()
        output: Any = None
        error: BaseException | None = None
        reward: float | None = None
        try:
            output = await self.root.execute(input, state, None)
        except asyncio.CancelledError as e:
            self._finish(state, "cancelled", None, e, None)
            raise
        except Exception as e:
            error = e
        if self.evaluator is not None:
            if error is None:
                try:
                    reward = await self._evaluate(input, output, expected)
                except Exception as e:
                    error = EvaluationError(f"evaluator of workflow {self.name!r} failed: {e!r}")
                    error.__cause__ = e
            else:
                reward = 0.0
        status = "succeeded" if error is None else "failed"
        self._finish(state, status, output, error, reward)
        return RunResult(
            run_id=info.run_id,
            workflow=self.name,
            input=input,
            output=output,
            status=status,
            error=error,
            reward=reward,
            resources_id=resources.resources_id,
            start_time=info.start_time,
            end_time=info.end_time or time.time(),
            llm_calls=state.llm_calls,
            rollout_id=info.rollout_id,
            attempt_id=info.attempt_id,
        )

    def run_sync(self, input: Any = None, **kw: Any) -> RunResult:
        """Run from synchronous code (starts and closes an event loop)."""

        async def _main() -> RunResult:
            try:
                return await self.run(input, **kw)
            finally:
                await self.aclose()

        return asyncio.run(_main())

    @staticmethod
    def _finish(
        state: RunState, status: str, output: Any, error: BaseException | None, reward: float | None
    ) -> None:
        info = state.info
        info.end_time = time.time()
        info.status = {"succeeded": "ok", "cancelled": "cancelled"}.get(status, "error")  # type: ignore[assignment]
        info.output, info.error, info.reward = output, error, reward
        if state.listeners:
            emit(state.listeners_reversed, "on_run_end", info)

    async def _evaluate(self, input: Any, output: Any, expected: Any) -> float:
        assert self.evaluator is not None
        value = self.evaluator(input, output, expected)
        if inspect.isawaitable(value):
            value = await value
        return float(value)

    async def aclose(self) -> None:
        """Close the LLM clients' connection pools."""
        await self._clients.aclose()

    def steps(self) -> list[Step]:
        """Every step of the tree, depth first."""
        out: list[Step] = []

        def walk(s: Step) -> None:
            out.append(s)
            for c in s.children():
                walk(c)

        walk(self.root)
        return out
