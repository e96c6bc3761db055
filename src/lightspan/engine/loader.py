"""Workflows from YAML files, validated with errors that name the step and the field.

Why our own small validator rather than a schema dump: a workflow author needs to read
``steps[2] (fork 'answers') > branches[0] (llm 'short'): unknown key 'promt'; allowed: ...``,
not a list of union-member failures.

File shape::

    workflow: answer-questions
    evaluator: qa_steps:exact                 # optional, "module:function" (modules next to
                                              # the file are importable)
    resources:                                # optional; the run's static resource set
      id: rs-demo-1
      prompts: {solve: {template: "Q: {question}", engine: f-string}}
      llms:
        default: {endpoint: "http://127.0.0.1:8080/v1", model: m,
                  sampling_parameters: {max_tokens: 64}}
    steps:                                    # a sequence (or `root:` with one step)
      - task: {name: prepare, call: qa_steps:prepare, timeout: 5, retry: {max_attempts: 3}}
      - fork:
          name: answers
          join: all                           # all | first | majority | {quorum: 2}
          on_error: fail_fast                 # or collect
          reducer: qa_steps:pick
          branches:
            - llm: {name: short, prompt: solve, llm: default}
      - organizer_worker:
          name: fan-out
          concurrency: 4
          organizer: {task: {name: plan, call: qa_steps:plan}}
          worker: {llm: {name: do, prompt: solve}}
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from lightspan.engine.errors import ResourceError, WorkflowDefinitionError
from lightspan.engine.resources import (
    LLMResource,
    PromptTemplate,
    ResourceSet,
)
from lightspan.engine.runtime import Workflow
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

_COMMON = {"name", "timeout", "retry"}
_KEYS: dict[str, set[str]] = {
    "task": _COMMON | {"call"},
    "sequence": _COMMON | {"steps"},
    "fork": _COMMON | {"branches", "join", "reducer", "on_error", "agree"},
    "organizer_worker": _COMMON | {"organizer", "worker", "concurrency", "reducer", "on_error"},
    "llm": _COMMON | {"prompt", "llm", "system", "parse"},
}
_REQUIRED: dict[str, set[str]] = {
    "task": {"name", "call"},
    "sequence": {"name", "steps"},
    "fork": {"name", "branches"},
    "organizer_worker": {"name", "organizer", "worker"},
    "llm": {"name", "prompt"},
}
_RETRY_KEYS = {"max_attempts", "backoff", "multiplier", "max_backoff", "jitter"}


def import_callable(ref: str, where: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function, or an error naming ``where``."""
    if not isinstance(ref, str) or ":" not in ref:
        raise WorkflowDefinitionError(f"{where}: expected 'module:function', got {ref!r}")
    mod_name, _, attr = ref.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise WorkflowDefinitionError(f"{where}: cannot import module {mod_name!r}: {e}") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise WorkflowDefinitionError(f"{where}: module {mod_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise WorkflowDefinitionError(f"{where}: {ref!r} is not callable")
    return obj


class _Loader:
    def __init__(self, resources: ResourceSet | None) -> None:
        self.resources = resources

    def step(self, node: Any, where: str) -> Step:
        if not isinstance(node, Mapping) or len(node) != 1:
            raise WorkflowDefinitionError(
                f"{where}: a step is a mapping with exactly one of {sorted(_KEYS)} as its key, "
                f"got {node!r}"
            )
        kind, spec = next(iter(node.items()))
        if kind not in _KEYS:
            raise WorkflowDefinitionError(
                f"{where}: unknown step kind {kind!r}; allowed: {', '.join(sorted(_KEYS))}"
            )
        if not isinstance(spec, Mapping):
            raise WorkflowDefinitionError(f"{where} ({kind}): expected a mapping, got {spec!r}")
        label = f"{where} ({kind} {spec.get('name')!r})" if "name" in spec else f"{where} ({kind})"
        unknown = set(spec) - _KEYS[kind]
        if unknown:
            raise WorkflowDefinitionError(
                f"{label}: unknown key {sorted(unknown)[0]!r}; "
                f"allowed: {', '.join(sorted(_KEYS[kind]))}"
            )
        missing = _REQUIRED[kind] - set(spec)
        if missing:
            raise WorkflowDefinitionError(f"{label}: missing required key {sorted(missing)[0]!r}")
        common = self.common(spec, label)
        try:
            return getattr(self, f"build_{kind}")(spec, label, common)
        except WorkflowDefinitionError as e:
            msg = str(e)
            raise WorkflowDefinitionError(
                msg if msg.startswith(where) else f"{label}: {msg}"
            ) from None

    def common(self, spec: Mapping[str, Any], label: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        timeout = spec.get("timeout")
        if timeout is not None:
            if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
                raise WorkflowDefinitionError(
                    f"{label}.timeout: must be a number > 0, got {timeout!r}"
                )
            out["timeout"] = float(timeout)
        retry = spec.get("retry")
        if retry is not None:
            if isinstance(retry, int) and not isinstance(retry, bool):
                retry = {"max_attempts": retry}
            if not isinstance(retry, Mapping):
                raise WorkflowDefinitionError(f"{label}.retry: expected a mapping, got {retry!r}")
            bad = set(retry) - _RETRY_KEYS
            if bad:
                raise WorkflowDefinitionError(
                    f"{label}.retry: unknown key {sorted(bad)[0]!r}; "
                    f"allowed: {', '.join(sorted(_RETRY_KEYS))}"
                )
            try:
                out["retry"] = RetryPolicy(**retry)
            except (TypeError, WorkflowDefinitionError) as e:
                raise WorkflowDefinitionError(f"{label}.retry: {e}") from None
        return out

    def steps(self, nodes: Any, where: str) -> list[Step]:
        if not isinstance(nodes, list) or not nodes:
            raise WorkflowDefinitionError(f"{where}: expected a non-empty list of steps")
        return [self.step(n, f"{where}[{i}]") for i, n in enumerate(nodes)]

    def build_task(self, spec: Mapping[str, Any], label: str, common: dict[str, Any]) -> Step:
        return Task(spec["name"], import_callable(spec["call"], f"{label}.call"), **common)

    def build_sequence(self, spec: Mapping[str, Any], label: str, common: dict[str, Any]) -> Step:
        return SequenceStep(spec["name"], self.steps(spec["steps"], f"{label} > steps"), **common)

    def join(self, raw: Any, label: str) -> JoinPolicy:
        if raw is None or raw == "all":
            return JoinPolicy.all()
        if raw == "first":
            return JoinPolicy.first()
        if raw == "majority":
            return JoinPolicy.majority()
        if isinstance(raw, Mapping) and set(raw) == {"quorum"} and isinstance(raw["quorum"], int):
            return JoinPolicy.quorum(raw["quorum"])
        raise WorkflowDefinitionError(
            f"{label}.join: expected all, first, majority or {{quorum: k}}, got {raw!r}"
        )

    def build_fork(self, spec: Mapping[str, Any], label: str, common: dict[str, Any]) -> Step:
        reducer, agree = spec.get("reducer"), spec.get("agree")
        return Fork(
            spec["name"],
            self.steps(spec["branches"], f"{label} > branches"),
            join=self.join(spec.get("join"), label),
            reducer=import_callable(reducer, f"{label}.reducer") if reducer else None,
            on_error=spec.get("on_error", "fail_fast"),
            agree=import_callable(agree, f"{label}.agree") if agree else None,
            **common,
        )

    def build_organizer_worker(
        self, spec: Mapping[str, Any], label: str, common: dict[str, Any]
    ) -> Step:
        reducer = spec.get("reducer")
        conc = spec.get("concurrency", 4)
        if not isinstance(conc, int) or isinstance(conc, bool):
            raise WorkflowDefinitionError(f"{label}.concurrency: expected an integer, got {conc!r}")
        return OrganizerWorker(
            spec["name"],
            self.step(spec["organizer"], f"{label} > organizer"),
            self.step(spec["worker"], f"{label} > worker"),
            concurrency=conc,
            reducer=import_callable(reducer, f"{label}.reducer") if reducer else None,
            on_error=spec.get("on_error", "fail_fast"),
            **common,
        )

    def build_llm(self, spec: Mapping[str, Any], label: str, common: dict[str, Any]) -> Step:
        llm = spec.get("llm", "default")
        if self.resources is not None:
            for key, name, getter in (
                ("prompt", spec["prompt"], self.resources.prompt),
                ("system", spec.get("system"), self.resources.prompt),
                ("llm", llm, self.resources.llm),
            ):
                if name is None:
                    continue
                try:
                    getter(name)
                except Exception as e:
                    raise WorkflowDefinitionError(f"{label}.{key}: {e}") from None
        parse = spec.get("parse")
        return LLMTask(
            spec["name"],
            prompt=spec["prompt"],
            llm=llm,
            system=spec.get("system"),
            parse=import_callable(parse, f"{label}.parse") if parse else None,
            **common,
        )


def parse_resources(raw: Any, where: str = "resources") -> ResourceSet:
    """The ``resources:`` section -> a ResourceSet (errors name the resource and field)."""
    if not isinstance(raw, Mapping):
        raise WorkflowDefinitionError(f"{where}: expected a mapping")
    unknown = set(raw) - {"id", "version", "prompts", "llms"}
    if unknown:
        raise WorkflowDefinitionError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; allowed: id, llms, prompts, version"
        )
    res: dict[str, Any] = {}
    for name, p in (raw.get("prompts") or {}).items():
        if isinstance(p, str):
            p = {"template": p}
        if not isinstance(p, Mapping) or "template" not in p or set(p) - {"template", "engine"}:
            raise WorkflowDefinitionError(
                f"{where}.prompts.{name}: expected a string or {{template, engine}}, got {p!r}"
            )
        try:
            res[name] = PromptTemplate(p["template"], p.get("engine", "f-string"))
        except Exception as e:
            raise WorkflowDefinitionError(f"{where}.prompts.{name}: {e}") from None
    allowed_llm = {"endpoint", "model", "api_key", "sampling_parameters", "provider"}
    for name, llm in (raw.get("llms") or {}).items():
        if not isinstance(llm, Mapping):
            raise WorkflowDefinitionError(f"{where}.llms.{name}: expected a mapping")
        bad = set(llm) - allowed_llm
        if bad:
            raise WorkflowDefinitionError(
                f"{where}.llms.{name}: unknown key {sorted(bad)[0]!r}; "
                f"allowed: {', '.join(sorted(allowed_llm))}"
            )
        for req in ("endpoint", "model"):
            if req not in llm:
                raise WorkflowDefinitionError(f"{where}.llms.{name}: missing required key {req!r}")
        res[name] = LLMResource(
            endpoint=str(llm["endpoint"]),
            model=str(llm["model"]),
            api_key=llm.get("api_key"),
            sampling_parameters=dict(llm.get("sampling_parameters") or {}),
            provider=str(llm.get("provider", "openai")),
        )
    try:
        return ResourceSet(str(raw.get("id", "rs-static")), res, int(raw.get("version", 1)))
    except ResourceError as e:  # a malformed long-input variant
        raise WorkflowDefinitionError(f"{where}: {e}") from None


def workflow_from_dict(data: Any, *, source: str = "<dict>", **workflow_kw: Any) -> Workflow:
    """Build and validate a workflow from its YAML structure."""
    if not isinstance(data, Mapping):
        raise WorkflowDefinitionError(f"{source}: a workflow file is a mapping")
    allowed = {"workflow", "steps", "root", "resources", "evaluator"}
    unknown = set(data) - allowed
    if unknown:
        raise WorkflowDefinitionError(
            f"{source}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    name = data.get("workflow")
    if not isinstance(name, str) or not name:
        raise WorkflowDefinitionError(f"{source}: missing required key 'workflow' (its name)")
    resources = parse_resources(data["resources"]) if "resources" in data else None
    loader = _Loader(resources)
    if ("steps" in data) == ("root" in data):
        raise WorkflowDefinitionError(f"{source}: give exactly one of 'steps' (a list) or 'root'")
    if "steps" in data:
        root: Step = SequenceStep(name, loader.steps(data["steps"], "steps"))
    else:
        root = loader.step(data["root"], "root")
    evaluator = data.get("evaluator")
    if resources is not None:
        workflow_kw.setdefault("resources", resources)
    return Workflow(
        name,
        root,
        evaluator=import_callable(evaluator, "evaluator") if evaluator else None,
        **workflow_kw,
    )


def _make_importable(directory: Path) -> None:
    """Put the workflow file's directory on ``sys.path`` (last, so it shadows nothing).

    Why: a workflow's task modules usually sit next to its YAML file (``examples/qa/qa.yaml``
    and ``qa_steps.py``); without this, ``call: qa_steps:first_number`` would import only when
    the command happens to run from that directory or with ``PYTHONPATH`` set.
    """
    entry = str(directory.resolve())
    if entry not in sys.path:
        sys.path.append(entry)


def load_workflow(path: str | Path, **workflow_kw: Any) -> Workflow:
    """Load a workflow YAML file; every error names the file, the step and the field.

    Modules next to the file are importable by ``module:function`` references.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise WorkflowDefinitionError(f"cannot read workflow file {p}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise WorkflowDefinitionError(f"workflow file {p} is not valid YAML: {e}") from None
    _make_importable(p.parent)
    try:
        return workflow_from_dict(data, source=str(p), **workflow_kw)
    except WorkflowDefinitionError as e:
        msg = str(e)
        raise WorkflowDefinitionError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None
