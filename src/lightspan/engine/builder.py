"""Short constructors for building workflows in Python.

    wf = Workflow("qa", sequence("main",
        task("prepare", prepare),
        fork("answers", [llm_task("a", prompt="p1"), llm_task("b", prompt="p2")], join="first"),
    ))

``task`` also works as a decorator: ``@task("prepare")`` turns a function into a Task step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, overload

from lightspan.engine.steps import (
    Fork,
    JoinPolicy,
    LLMTask,
    OrganizerWorker,
    RetryPolicy,
    SequenceStep,
    Step,
    Task,
)


def _retry(retry: RetryPolicy | int | None) -> RetryPolicy | None:
    return RetryPolicy(max_attempts=retry) if isinstance(retry, int) else retry


@overload
def task(name: str, fn: Callable[..., Any], **kw: Any) -> Task: ...
@overload
def task(name: str, fn: None = None, **kw: Any) -> Callable[[Callable[..., Any]], Task]: ...
def task(name: str, fn: Callable[..., Any] | None = None, **kw: Any) -> Any:
    """A task step from ``fn`` (or, without ``fn``, a decorator that makes one)."""
    kw["retry"] = _retry(kw.get("retry"))
    if fn is None:
        return lambda f: Task(name, f, **kw)
    return Task(name, fn, **kw)


def sequence(name: str, *steps: Step, **kw: Any) -> SequenceStep:
    kw["retry"] = _retry(kw.get("retry"))
    return SequenceStep(name, steps, **kw)


def fork(
    name: str,
    branches: Mapping[str, Step] | Iterable[Step],
    *,
    join: JoinPolicy | str | int = "all",
    **kw: Any,
) -> Fork:
    """``join``: ``"all"``, ``"first"``, ``"majority"``, an int k for a quorum, or a JoinPolicy."""
    if isinstance(join, str):
        kinds = {"all": JoinPolicy.all, "first": JoinPolicy.first, "majority": JoinPolicy.majority}
        policy = kinds[join]()
    elif isinstance(join, int):
        policy = JoinPolicy.quorum(join)
    else:
        policy = join
    kw["retry"] = _retry(kw.get("retry"))
    return Fork(name, branches, join=policy, **kw)


def organizer_worker(name: str, organizer: Step, worker: Step, **kw: Any) -> OrganizerWorker:
    kw["retry"] = _retry(kw.get("retry"))
    return OrganizerWorker(name, organizer, worker, **kw)


def llm_task(name: str, *, prompt: str, llm: str = "default", **kw: Any) -> LLMTask:
    kw["retry"] = _retry(kw.get("retry"))
    return LLMTask(name, prompt=prompt, llm=llm, **kw)
