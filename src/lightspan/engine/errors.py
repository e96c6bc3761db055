"""Exceptions the engine raises; each message names the step or resource at fault."""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base class of the engine's own errors."""


class WorkflowDefinitionError(EngineError):
    """A workflow (Python-built or YAML) is invalid; the message names the step and field."""


class ResourceError(EngineError):
    """A resource the run needs is missing or malformed."""


class StepFailed(EngineError):
    """A step failed after its retries; ``__cause__`` is the last error."""

    def __init__(self, step: str, attempts: int, error: BaseException) -> None:
        super().__init__(f"step {step!r} failed after {attempts} attempt(s): {error!r}")
        self.step = step
        self.attempts = attempts
        self.error = error


class StepTimeout(EngineError, TimeoutError):
    """A step attempt exceeded its timeout."""

    def __init__(self, step: str, timeout: float) -> None:
        super().__init__(f"step {step!r} timed out after {timeout:g} s")
        self.step = step
        self.timeout = timeout


class JoinFailed(EngineError):
    """A fork's join policy could not be satisfied.

    ``results`` holds the branches that succeeded, ``errors`` the ones that failed.
    """

    def __init__(
        self,
        fork: str,
        policy: str,
        results: dict[str, Any],
        errors: dict[str, BaseException],
    ) -> None:
        failed = ", ".join(f"{k}: {v!r}" for k, v in errors.items())
        super().__init__(
            f"fork {fork!r}: join policy {policy} not satisfied "
            f"({len(results)} succeeded, {len(errors)} failed: {failed})"
        )
        self.fork = fork
        self.policy = policy
        self.results = results
        self.errors = errors


class LLMCallError(EngineError):
    """The chat endpoint failed; names the endpoint and model."""


class EvaluationError(EngineError):
    """The workflow's evaluator raised; the run counts as failed."""
