"""The runner stage: lightspan workflows as Agent Lightning rollouts served from a LightningStore.

* :class:`WorkflowRunner`: dequeues rollouts, runs the workflow with the rollout's resources,
  delivers its spans (prompts, completions, reward) and then its status (see
  :mod:`lightspan.runner.runner` for the guarantee and the failure rules).
* :class:`ResourcesProvider`: resources from the store (namespaced ``<workflow>:<tag>``, TTL
  cache) laid over the workflow's own set by :func:`overlay`.
* :class:`InputMapping`: rollout input -> ``(input, expected)``.

See docs/runner.md.
"""

from lightspan.runner.inputs import InputError, InputMapping
from lightspan.runner.resources import (
    DEFAULT_LLM,
    MAIN_LLM,
    ResourcesProvider,
    namespaced_id,
    overlay,
    publish,
    to_store_resources,
    workflow_of,
)
from lightspan.runner.runner import RunnerStats, WorkflowRunner

__all__ = [
    "DEFAULT_LLM",
    "MAIN_LLM",
    "InputError",
    "InputMapping",
    "ResourcesProvider",
    "RunnerStats",
    "WorkflowRunner",
    "namespaced_id",
    "overlay",
    "publish",
    "to_store_resources",
    "workflow_of",
]
