"""Step kinds and how each one executes: task, sequence, fork/join, organizer-worker, LLM task.

Why structured concurrency everywhere: a fork or a worker pool never returns while a child
task is still running, and a cancellation (from a timeout, a fail-fast sibling or the caller)
reaches every child and is awaited, so there are no orphaned tasks and no
"Task was destroyed but it is pending" warnings.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lightspan.engine.errors import JoinFailed, StepFailed, StepTimeout, WorkflowDefinitionError
from lightspan.engine.events import StepInfo, StepKind, emit, notify

if TYPE_CHECKING:
    from lightspan.engine.runtime import RunState


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries with exponential backoff (and jitter) for a step's failures."""

    max_attempts: int = 1
    backoff: float = 0.1
    """Delay before the second attempt, in seconds."""
    multiplier: float = 2.0
    max_backoff: float = 10.0
    jitter: float = 0.1
    """Fraction of the delay added at random, so retries of many runs spread out."""
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise WorkflowDefinitionError("retry max_attempts must be >= 1")
        if self.backoff < 0 or self.multiplier < 1 or self.max_backoff < 0:
            raise WorkflowDefinitionError(
                "retry backoff and max_backoff must be >= 0, multiplier >= 1"
            )

    def delay(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based)."""
        base = min(self.backoff * self.multiplier ** (attempt - 1), self.max_backoff)
        return base * (1 + self.jitter * random.random())


NO_RETRY = RetryPolicy()


class Step:
    """Base of all steps: a name, an optional per-attempt timeout and a retry policy."""

    kind: StepKind = "task"

    def __init__(
        self, name: str, *, timeout: float | None = None, retry: RetryPolicy | None = None
    ) -> None:
        if not name or not isinstance(name, str):
            raise WorkflowDefinitionError(f"a {self.kind} step needs a non-empty name")
        if timeout is not None and timeout <= 0:
            raise WorkflowDefinitionError(f"step {name!r}: timeout must be > 0, got {timeout}")
        self.name = name
        self.timeout = timeout
        self.retry = retry or NO_RETRY

    def children(self) -> Sequence[Step]:
        return ()

    async def _body(self, value: Any, run: RunState, info: StepInfo | None) -> Any:
        raise NotImplementedError

    async def execute(self, value: Any, run: RunState, parent: StepInfo | None) -> Any:
        """Run the step with its timeout and retries, reporting to the run's listeners."""
        if not run.step_listeners:
            return await self._attempts(value, run, None)
        info = StepInfo(self.kind, self.name, run.info, parent, step=self, input=value)
        with _Reported(info, run):
            info.output = await self._attempts(value, run, info)
            return info.output

    async def _attempts(self, value: Any, run: RunState, info: StepInfo | None) -> Any:
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            if info is not None:
                info.attempts = attempt
            try:
                if self.timeout is None:
                    return await self._body(value, run, info)
                try:
                    async with asyncio.timeout(self.timeout):
                        return await self._body(value, run, info)
                except TimeoutError as e:
                    if isinstance(e, StepTimeout):
                        raise
                    raise StepTimeout(self.name, self.timeout) from None
            except asyncio.CancelledError:
                raise
            except policy.retry_on as e:
                if attempt >= policy.max_attempts:
                    if policy.max_attempts == 1:
                        raise
                    raise StepFailed(self.name, attempt, e) from e
                delay = policy.delay(attempt)
                if info is not None:
                    emit(run.step_listeners, "on_step_retry", info, e, delay)
                await asyncio.sleep(delay)


TaskFn = Callable[..., Any]


class Task(Step):
    """Any callable: ``fn(value)`` or ``fn(value, ctx)``; sync callables run in a thread pool.

    ``ctx`` is a :class:`~lightspan.engine.runtime.TaskContext` (run id, resources, ``chat()``).
    """

    kind: StepKind = "task"

    def __init__(self, name: str, fn: TaskFn, **kw: Any) -> None:
        super().__init__(name, **kw)
        if not callable(fn):
            raise WorkflowDefinitionError(f"task {name!r}: {fn!r} is not callable")
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
        try:
            params = [
                p
                for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            self.wants_ctx = len(params) >= 2
        except (TypeError, ValueError):
            self.wants_ctx = False

    async def _body(self, value: Any, run: RunState, info: StepInfo | None) -> Any:
        args = (value, run.task_context(self, info)) if self.wants_ctx else (value,)
        if self.is_async:
            return await self.fn(*args)
        # asyncio.to_thread copies the contextvars context, so observers' context follows.
        result = await asyncio.to_thread(self.fn, *args)
        if inspect.isawaitable(result):
            return await result
        return result


class SequenceStep(Step):
    """Steps in order; each step's output is the next one's input."""

    kind: StepKind = "sequence"

    def __init__(self, name: str, steps: Iterable[Step], **kw: Any) -> None:
        super().__init__(name, **kw)
        self.steps = list(steps)
        if not self.steps:
            raise WorkflowDefinitionError(f"sequence {name!r} has no steps")
        _check_unique(name, self.steps)

    def children(self) -> Sequence[Step]:
        return self.steps

    async def _body(self, value: Any, run: RunState, info: StepInfo | None) -> Any:
        for step in self.steps:
            value = await step.execute(value, run, info)
        return value


JoinKind = Literal["all", "first", "quorum", "majority"]


@dataclass(frozen=True, slots=True)
class JoinPolicy:
    """When a fork is done: ``all`` branches, the ``first`` successful one, a ``quorum`` of k,
    or a ``majority``: branches start in order, only as many as could still form a majority,
    and the fork stops once more than half of all its branches agree (see :class:`Fork`)."""

    kind: JoinKind = "all"
    k: int | None = None

    @classmethod
    def all(cls) -> JoinPolicy:
        return cls("all")

    @classmethod
    def first(cls) -> JoinPolicy:
        return cls("first", 1)

    @classmethod
    def majority(cls) -> JoinPolicy:
        return cls("majority")

    @classmethod
    def quorum(cls, k: int) -> JoinPolicy:
        if k < 1:
            raise WorkflowDefinitionError(f"quorum must be >= 1, got {k}")
        return cls("quorum", k)

    def needed(self, n: int) -> int:
        """Branches that must succeed (for ``majority``: that must agree, more than half)."""
        if self.kind == "all":
            return n
        if self.kind == "majority":
            return n // 2 + 1
        if self.kind == "first":
            return 1
        assert self.k is not None
        return self.k

    def __str__(self) -> str:
        return f"quorum({self.k})" if self.kind == "quorum" else self.kind


ErrorMode = Literal["fail_fast", "collect"]
Reducer = Callable[[Any], Any]
AgreeKey = Callable[[Any], Any]
"""What a ``majority`` join compares: a branch result -> a hashable vote (``None``: no vote)."""


def default_agree_key(result: Any) -> Any:
    """A result votes as itself (stripped if text); unhashable results vote by their repr."""
    if isinstance(result, str):
        return result.strip() or None
    try:
        hash(result)
    except TypeError:
        return repr(result)
    return result


class Fork(Step):
    """Branches run concurrently on the same input, then join by policy; a reducer combines.

    ``on_error="fail_fast"`` cancels the other branches as soon as the policy can no longer be
    met; ``"collect"`` lets every branch finish and reports all failures together. The reducer
    gets ``{branch: result}`` of the branches that count (for ``first``: that branch's result).
    Branches that a policy no longer needs are cancelled.

    ``join=majority`` is self-consistency that pays only for the votes it needs: the first
    ``n // 2 + 1`` branches start; when their results (compared through ``agree``, a result ->
    vote key) agree, the fork is decided and the other branches never start; otherwise the
    next branches start, as few as could still complete a majority, and when no value can reach
    one any more, all the rest, so the reducer sees every result as with ``all``. A majority
    reducer therefore returns what it would have returned with ``all`` (when the branches give
    the same answers run alone as together), at the cost of the branches the decision needed.
    """

    kind: StepKind = "fork"

    def __init__(
        self,
        name: str,
        branches: Mapping[str, Step] | Iterable[Step],
        *,
        join: JoinPolicy | None = None,
        reducer: Reducer | None = None,
        on_error: ErrorMode = "fail_fast",
        agree: AgreeKey | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(name, **kw)
        if isinstance(branches, Mapping):
            self.branches = dict(branches)
        else:
            items = list(branches)
            _check_unique(name, items)
            self.branches = {s.name: s for s in items}
        if not self.branches:
            raise WorkflowDefinitionError(f"fork {name!r} has no branches")
        self.join = join or JoinPolicy.all()
        needed = self.join.needed(len(self.branches))
        if needed > len(self.branches):
            raise WorkflowDefinitionError(
                f"fork {name!r}: join {self.join} needs more branches than the "
                f"{len(self.branches)} it has"
            )
        if on_error not in ("fail_fast", "collect"):
            raise WorkflowDefinitionError(
                f"fork {name!r}: on_error must be 'fail_fast' or 'collect', got {on_error!r}"
            )
        if agree is not None and self.join.kind != "majority":
            raise WorkflowDefinitionError(
                f"fork {name!r}: agree is used by join majority only, not by {self.join}"
            )
        self.agree: AgreeKey = agree or default_agree_key
        self.reducer = reducer
        self.on_error: ErrorMode = on_error

    def children(self) -> Sequence[Step]:
        return list(self.branches.values())

    async def _branch(
        self, bname: str, step: Step, value: Any, run: RunState, info: StepInfo | None
    ) -> Any:
        if info is None:
            return await step.execute(value, run, None)
        binfo = StepInfo(
            "branch",
            bname,
            run.info,
            info,
            step=step,
            input=value,
            attrs={"branch.name": bname, "fork.name": self.name},
        )
        with _Reported(binfo, run):
            binfo.output = await step.execute(value, run, binfo)
            return binfo.output

    async def _body(self, value: Any, run: RunState, info: StepInfo | None) -> Any:
        if self.join.kind == "majority":
            return await self._majority(value, run, info)
        names = list(self.branches)
        n = len(names)
        needed = self.join.needed(n)
        tasks: dict[asyncio.Task[Any], str] = {}
        self._start(names, tasks, value, run, info)
        results: dict[str, Any] = {}
        errors: dict[str, BaseException] = {}
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                _sort_out(sorted(done, key=lambda t: names.index(tasks[t])), tasks, results, errors)
                if len(results) >= needed and self.join.kind != "all":
                    break
                if len(results) + len(pending) < needed and self.on_error == "fail_fast":
                    break
        finally:
            cancelled = await _cancel_and_wait(pending)
        if info is not None:
            winners = [b for b in names if b in results][:needed]
            self._record_join(info, winners, errors, [tasks[t] for t in cancelled])
        if len(results) < needed:
            if self.join.kind == "all" and len(errors) == 1 and self.on_error == "fail_fast":
                raise next(iter(errors.values()))
            raise JoinFailed(self.name, str(self.join), results, errors)
        if self.join.kind == "first":
            value_out: Any = results[next(b for b in names if b in results)]
        else:
            ordered = {b: results[b] for b in names if b in results}
            value_out = (
                dict(list(ordered.items())[:needed]) if self.join.kind == "quorum" else ordered
            )
        return await _maybe_await(self.reducer(value_out)) if self.reducer else value_out

    def _start(
        self,
        bnames: Iterable[str],
        tasks: dict[asyncio.Task[Any], str],
        value: Any,
        run: RunState,
        info: StepInfo | None,
    ) -> None:
        """Start the named branches, each an asyncio task filed under its name in ``tasks``."""
        for b in bnames:
            coro = self._branch(b, self.branches[b], value, run, info)
            tasks[asyncio.create_task(coro, name=f"{self.name}/{b}")] = b

    def _record_join(
        self,
        info: StepInfo,
        winners: list[str],
        errors: Mapping[str, BaseException],
        cancelled: Iterable[str],
    ) -> None:
        """The join's outcome on the fork's step info (span attributes), in branch order."""
        names = list(self.branches)
        info.attrs["join.policy"] = str(self.join)
        info.attrs["join.winners"] = winners
        info.attrs["join.failed"] = [b for b in names if b in errors]
        info.attrs["join.cancelled"] = sorted(cancelled, key=names.index)

    def _to_start(self, results: Mapping[str, Any], waiting: int) -> int:
        """How many more branches a majority join starts now (``waiting``: not yet started)."""
        needed = self.join.needed(len(self.branches))
        votes: dict[Any, int] = {}
        for result in results.values():
            key = self.agree(result)
            if key is not None:
                votes[key] = votes.get(key, 0) + 1
        # 0: decided. More than are waiting: no value can reach a majority, all the rest start.
        return min(max(needed - max(votes.values(), default=0), 0), waiting)

    async def _majority(self, value: Any, run: RunState, info: StepInfo | None) -> Any:
        names = list(self.branches)
        waiting = names[self.join.needed(len(names)) :]
        tasks: dict[asyncio.Task[Any], str] = {}
        self._start(names[: len(names) - len(waiting)], tasks, value, run, info)
        results: dict[str, Any] = {}
        errors: dict[str, BaseException] = {}
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                _sort_out(done, tasks, results, errors)
                if errors and self.on_error == "fail_fast":
                    break
                if not pending:
                    more = self._to_start(results, len(waiting))
                    self._start(waiting[:more], tasks, value, run, info)
                    pending = {t for t in tasks if not t.done()}
                    del waiting[:more]
        finally:
            cancelled = await _cancel_and_wait(pending)
        ordered = {b: results[b] for b in names if b in results}
        if info is not None:
            self._record_join(info, list(ordered), errors, [tasks[t] for t in cancelled])
            info.attrs["join.skipped"] = [b for b in names if b not in tasks.values()]
        if errors and (self.on_error == "fail_fast" or not ordered):
            if len(errors) == 1 and self.on_error == "fail_fast":
                raise next(iter(errors.values()))
            raise JoinFailed(self.name, str(self.join), results, errors)
        return await _maybe_await(self.reducer(ordered)) if self.reducer else ordered


def _sort_out(
    done: Iterable[asyncio.Task[Any]],
    names: Mapping[asyncio.Task[Any], str],
    results: dict[str, Any],
    errors: dict[str, BaseException],
) -> None:
    """File each finished branch task under its name, as a result or as an error."""
    for t in done:
        if t.cancelled():
            errors[names[t]] = asyncio.CancelledError()
        elif t.exception() is not None:
            errors[names[t]] = t.exception()  # type: ignore[assignment]
        else:
            results[names[t]] = t.result()


class OrganizerWorker(Step):
    """An organizer step produces work items at run time; a worker step processes each one.

    Workers run concurrently, at most ``concurrency`` at a time (a pool of lanes that take
    items in order); results keep the items'
    order and go to the reducer (default: the list). A failed item fails the step
    (``on_error="fail_fast"``, the others are cancelled) or is reported with the others at the
    end (``"collect"``).
    """

    kind: StepKind = "organizer_worker"

    def __init__(
        self,
        name: str,
        organizer: Step,
        worker: Step,
        *,
        concurrency: int = 4,
        reducer: Reducer | None = None,
        on_error: ErrorMode = "fail_fast",
        **kw: Any,
    ) -> None:
        super().__init__(name, **kw)
        if concurrency < 1:
            raise WorkflowDefinitionError(f"organizer_worker {name!r}: concurrency must be >= 1")
        if on_error not in ("fail_fast", "collect"):
            raise WorkflowDefinitionError(
                f"organizer_worker {name!r}: on_error must be 'fail_fast' or 'collect'"
            )
        _check_unique(name, [organizer, worker])
        self.organizer = organizer
        self.worker = worker
        self.concurrency = concurrency
        self.reducer = reducer
        self.on_error: ErrorMode = on_error

    def children(self) -> Sequence[Step]:
        return [self.organizer, self.worker]

    async def _work(self, index: int, item: Any, run: RunState, info: StepInfo | None) -> Any:
        if info is None:
            return await self.worker.execute(item, run, None)
        winfo = StepInfo("worker", f"{self.worker.name}[{index}]", run.info, info, input=item)
        winfo.step = self.worker
        winfo.attrs["worker.index"] = index
        winfo.attrs["organizer.name"] = self.name
        with _Reported(winfo, run):
            winfo.output = await self.worker.execute(item, run, winfo)
            return winfo.output

    async def _body(self, value: Any, run: RunState, info: StepInfo | None) -> Any:
        items = await self.organizer.execute(value, run, info)
        if isinstance(items, str | bytes) or not isinstance(items, Iterable):
            raise WorkflowDefinitionError(
                f"organizer {self.organizer.name!r} of {self.name!r} must return an iterable of "
                f"work items, got {type(items).__name__}"
            )
        items = list(items)
        if info is not None:
            info.attrs["organizer.items"] = len(items)
            info.attrs["organizer.concurrency"] = self.concurrency
        results: list[Any] = [None] * len(items)
        errors: dict[int, BaseException] = {}
        next_index = iter(range(len(items)))

        async def lane() -> None:
            # A fixed pool of lanes pulls items in order: cost stays O(1) per item however
            # many items the organizer produced.
            for i in next_index:
                try:
                    results[i] = await self._work(i, items[i], run, info)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    errors[i] = e
                    if self.on_error == "fail_fast":
                        return

        lanes = {
            asyncio.create_task(lane(), name=f"{self.name}/lane{k}")
            for k in range(min(self.concurrency, len(items)))
        }
        pending = lanes
        try:
            while pending:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if errors and self.on_error == "fail_fast":
                    break
        finally:
            await _cancel_and_wait(pending)
        for t in lanes:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        if errors:
            first = min(errors)
            if self.on_error == "fail_fast":
                raise errors[first]
            name = self.worker.name
            ok = {f"{name}[{i}]": r for i, r in enumerate(results) if i not in errors}
            raise JoinFailed(self.name, "all", ok, {f"{name}[{i}]": e for i, e in errors.items()})
        return await _maybe_await(self.reducer(results)) if self.reducer else results


class LLMTask(Step):
    """A chat completion whose prompt and model come from the run's resources.

    The input (a mapping, or a value bound to ``input``) fills the prompt template named
    ``prompt``; ``llm`` names the LLM resource (endpoint, model, sampling parameters with
    ``max_tokens``). ``system`` optionally names a second template for the system message.
    ``parse`` turns the completion text into the step's output (default: the text).
    """

    kind: StepKind = "llm"

    def __init__(
        self,
        name: str,
        *,
        prompt: str,
        llm: str = "default",
        system: str | None = None,
        parse: Callable[[str], Any] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(name, **kw)
        self.prompt = prompt
        self.llm = llm
        self.system = system
        self.parse = parse

    async def _body(self, value: Any, run: RunState, info: StepInfo | None) -> Any:
        res = run.resources
        step = self.name
        variables = dict(value) if isinstance(value, Mapping) else {"input": value}
        variables.setdefault("input", value)
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append(
                {"role": "system", "content": res.prompt(self.system, step).render(variables)}
            )
        prompt = res.resolve(self.prompt, step)
        messages.append({"role": "user", "content": res.prompt(prompt).render(variables)})
        llm = res.resolve(self.llm, step)
        text = await run.chat(
            res.llm(llm), messages, info, step_name=step, prompt_template=prompt, llm_name=llm
        )
        return self.parse(text) if self.parse else text


class _Reported:
    """Reports a step, branch or worker to the listeners around its body: started on entry,
    its outcome (ok / cancelled / error) and end time on exit.

    Why a context manager and not a wrapper coroutine: it adds no coroutine frame per observed
    step (the cost of tracing is per step), and the body starts only after ``on_step_start``,
    so context a listener attaches there is inherited by every task the body creates. The body
    sets ``info.output`` itself."""

    __slots__ = ("info", "run")

    def __init__(self, info: StepInfo, run: RunState) -> None:
        self.info = info
        self.run = run

    def __enter__(self) -> None:
        notify(self.run.step_start, self.info)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: Any
    ) -> None:
        info = self.info
        if kind is None:
            info.status = "ok"
        elif issubclass(kind, asyncio.CancelledError):
            info.status = "cancelled"
        else:
            info.status = "error"
            info.error = error
        info.end_time = time.time()
        notify(self.run.step_end, info)


def _check_unique(parent: str, steps: Iterable[Step]) -> None:
    seen: set[str] = set()
    for s in steps:
        if not isinstance(s, Step):
            raise WorkflowDefinitionError(f"{parent!r}: {s!r} is not a step")
        if s.name in seen:
            raise WorkflowDefinitionError(f"{parent!r}: two child steps are named {s.name!r}")
        seen.add(s.name)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _cancel_and_wait(pending: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Cancel ``pending`` and wait until each has really finished; returns the cancelled ones.

    Shielded from a cancellation of the caller while waiting, so that no child outlives its
    parent; the caller's own cancellation is re-raised afterwards by the awaiting code.
    """
    if not pending:
        return []
    for t in pending:
        t.cancel()
    waiter = asyncio.gather(*pending, return_exceptions=True)
    try:
        await asyncio.shield(waiter)
    except asyncio.CancelledError:
        await waiter
        raise
    return [t for t in pending if t.cancelled()]
