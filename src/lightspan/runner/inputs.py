"""How a rollout's ``input`` becomes a workflow run's ``(input, expected)``.

Why a mapping object: optimizers enqueue dataset rows as rollout inputs, and datasets come in
two shapes: ours (``{"input": ..., "expected": ...}``, what ``lightspan`` datasets and the
trainer write) and Agent Lightning's examples (a flat dict such as ``{"question": ...,
"answer": ...}`` where one key holds the expected value). One object decides, documented in one
place, and a row that fits neither gets an error that names the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightspan.engine.errors import EngineError

__all__ = ["InputError", "InputMapping"]


class InputError(EngineError, ValueError):
    """A rollout input that the mapping cannot turn into a workflow input."""


@dataclass(frozen=True, slots=True)
class InputMapping:
    """Rollout input -> ``(workflow input, expected)``.

    * ``{"input": X, "expected": Y}`` (only those keys, ``expected`` optional): ``(X, Y)``;
    * a flat dict with ``expected_key`` (e.g. ``answer``): the dict without that key, and its
      value as expected;
    * anything else (a flat dict without it, a string, a list...): ``(value, None)``.

    ``required_keys``: keys the workflow input must have (a flat dict, or the ``input`` of the
    wrapped form); a row without them fails its attempt with an error that names them, before
    any LLM is called.
    """

    input_key: str = "input"
    expected_key: str = "expected"
    required_keys: tuple[str, ...] = ()

    def __call__(self, value: Any) -> tuple[Any, Any]:
        inp, expected = self._split(value)
        if self.required_keys:
            if not isinstance(inp, Mapping):
                raise InputError(
                    f"rollout input must be a mapping with keys {list(self.required_keys)}, "
                    f"got {type(inp).__name__}"
                )
            missing = [k for k in self.required_keys if k not in inp]
            if missing:
                raise InputError(
                    f"rollout input lacks required key(s) {missing}; it has {sorted(map(str, inp))}"
                )
        return inp, expected

    def _split(self, value: Any) -> tuple[Any, Any]:
        if not isinstance(value, Mapping):
            return value, None
        keys = set(value)
        if self.input_key in keys and keys <= {self.input_key, self.expected_key}:
            return value[self.input_key], value.get(self.expected_key)
        if self.expected_key in keys:
            return {k: v for k, v in value.items() if k != self.expected_key}, value[
                self.expected_key
            ]
        return dict(value), None

    def to_rollout_input(self, input: Any, expected: Any = None) -> dict[str, Any]:
        """The wrapped form for enqueueing (what the trainer and benchmarks write)."""
        row: dict[str, Any] = {self.input_key: input}
        if expected is not None:
            row[self.expected_key] = expected
        return row
