"""The asyncio workflow engine: tasks, sequences, fork/join, organizer-worker, LLM tasks.

Imports no OpenTelemetry: observers plug in through :mod:`lightspan.engine.events`.
"""

from lightspan.engine.builder import fork, llm_task, organizer_worker, sequence, task
from lightspan.engine.errors import (
    EngineError,
    EvaluationError,
    JoinFailed,
    LLMCallError,
    ResourceError,
    StepFailed,
    StepTimeout,
    WorkflowDefinitionError,
)
from lightspan.engine.events import (
    BaseListener,
    EngineListener,
    LLMCallInfo,
    RunInfo,
    StepInfo,
    add_listener,
    remove_listener,
)
from lightspan.engine.llm import Price, PriceTable
from lightspan.engine.loader import load_workflow, workflow_from_dict
from lightspan.engine.resources import (
    LONG_INPUT,
    LLMResource,
    PromptTemplate,
    ResourceSet,
    ResourcesProvider,
    StaticResources,
    input_chars,
)
from lightspan.engine.runtime import LLMCallRecord, RunResult, TaskContext, Workflow
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

__all__ = [
    "LONG_INPUT",
    "BaseListener",
    "EngineError",
    "EngineListener",
    "EvaluationError",
    "Fork",
    "JoinFailed",
    "JoinPolicy",
    "LLMCallError",
    "LLMCallInfo",
    "LLMCallRecord",
    "LLMResource",
    "LLMTask",
    "OrganizerWorker",
    "Price",
    "PriceTable",
    "PromptTemplate",
    "ResourceError",
    "ResourceSet",
    "ResourcesProvider",
    "RetryPolicy",
    "RunInfo",
    "RunResult",
    "SequenceStep",
    "StaticResources",
    "Step",
    "StepFailed",
    "StepInfo",
    "StepTimeout",
    "Task",
    "TaskContext",
    "Workflow",
    "WorkflowDefinitionError",
    "add_listener",
    "fork",
    "input_chars",
    "llm_task",
    "load_workflow",
    "organizer_worker",
    "remove_listener",
    "sequence",
    "task",
    "workflow_from_dict",
]
