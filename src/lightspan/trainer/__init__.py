"""The trainer: reads stored traces, searches cheaper or better resources, publishes winners.

Why a separate stage: optimizing a workflow is a batch job over many runs (profile the spans,
evaluate candidate resource sets on labeled tasks, decide with a statistical test), while the
workflow itself only has to pick up whatever resource set is published. Dependencies point
one way: the trainer imports the engine, the store and the runner, never the reverse.
"""

from lightspan.trainer.data import Split, Task, TaskFileError, load_tasks, split_tasks
from lightspan.trainer.evaluation.evaluate import Evaluator, InProcessEvaluator, Result

__all__ = [
    "Evaluator",
    "InProcessEvaluator",
    "Result",
    "Split",
    "Task",
    "TaskFileError",
    "load_tasks",
    "split_tasks",
]
