"""Agent Lightning resources maps (name -> resource dict) as the trainer edits them.

Why per-step keys: the cost search changes the model of one step without touching the steps
that share its LLM resource, so a candidate adds ``<name>@<step>`` entries; the runner
resolves ``<name>@<step>`` first and falls back to ``<name>`` (the same rule is applied here
for in-process evaluation). A published set is always complete: every resource is in it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightspan.engine import LLMTask, Workflow

ResourcesMap = dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LLMStep:
    """An LLM task of the workflow and the resource names it uses."""

    name: str
    prompt: str
    llm: str
    system: str | None = None


def llm_steps(workflow: Workflow) -> list[LLMStep]:
    """Every LLM task of the workflow, in tree order (names are unique per parent)."""
    seen: dict[str, LLMStep] = {}
    for s in workflow.steps():
        if isinstance(s, LLMTask) and s.name not in seen:
            seen[s.name] = LLMStep(s.name, s.prompt, s.llm, s.system)
    return list(seen.values())


def resolve(resources: Mapping[str, Any], name: str, step: str) -> str:
    """The key a step uses for resource ``name``: ``name@step`` when present, else ``name``."""
    key = f"{name}@{step}"
    return key if key in resources else name


def with_step_resource(
    resources: ResourcesMap, name: str, step: str, resource: Mapping[str, Any]
) -> ResourcesMap:
    """A copy of ``resources`` where ``step`` uses ``resource`` for ``name`` (others unchanged)."""
    out = copy.deepcopy(resources)
    out[f"{name}@{step}"] = dict(resource)
    return out


def step_resource(resources: Mapping[str, Any], name: str, step: str) -> dict[str, Any]:
    return dict(resources[resolve(resources, name, step)])


def digest(resources: Mapping[str, Any]) -> str:
    """A short content hash: equal maps get equal ids (the evaluation cache key)."""
    blob = json.dumps(resources, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def candidate_id(workflow: str, resources: Mapping[str, Any]) -> str:
    """Resource id of a candidate (a content hash: never collides across runs).

    Deliberately *not* ``<workflow>:...``: runners and production processes adopt the newest
    ``<workflow>:*`` set as the workflow's latest, and a candidate must never become that.
    Candidate rollouts name their resources id explicitly, which always wins."""
    return f"trainer.{workflow}.cand-{digest(resources)}"


def placeholders(template: str) -> set[str]:
    """Top-level f-string placeholder names; raises ValueError when it does not parse."""
    names: set[str] = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            if field == "" or field.isdigit():
                raise ValueError("positional placeholder '{}' is not allowed")
            names.add(field.split(".")[0].split("[")[0])
    return names


def check_template_edit(original: str, edited: str, engine: str = "f-string") -> str | None:
    """Why an edited template is rejected (``None`` when acceptable): it must keep exactly
    the original placeholders and still format with them."""
    if not edited.strip():
        return "the edit is empty"
    if engine != "f-string":
        try:
            import jinja2
            import jinja2.meta

            env = jinja2.Environment()
            a = jinja2.meta.find_undeclared_variables(env.parse(original))
            b = jinja2.meta.find_undeclared_variables(env.parse(edited))
        except Exception as e:
            return f"the edit no longer parses as a jinja template: {e}"
        return None if a == b else f"placeholders changed: {sorted(a)} -> {sorted(b)}"
    try:
        before = placeholders(original)
    except ValueError as e:
        return f"the original template does not parse: {e}"
    try:
        after = placeholders(edited)
    except ValueError as e:
        return f"the edit no longer formats: {e}"
    if after - before:
        return f"the edit adds placeholder(s) {sorted(after - before)}"
    if before - after:
        return f"the edit drops placeholder(s) {sorted(before - after)}"
    try:
        edited.format(**{k: "x" for k in before})
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        return f"the edit no longer formats: {e!r}"
    return None


def prompt_names(resources: Mapping[str, Any]) -> list[str]:
    return sorted(k for k, v in resources.items() if v.get("resource_type") == "prompt_template")
