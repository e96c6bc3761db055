"""Versioned resources: what an LLM task sends (prompt templates, model, token budget).

Why versioned and resolved per run: the trainer publishes better prompts and cheaper
execution choices as new resource sets; a workflow picks the set up at the start of a run
and records which ``resources_id`` it used, so every trace says what produced it.

The field names follow Agent Lightning's resources (``llm``: endpoint, model, api_key,
sampling_parameters; ``prompt_template``: template, engine), so a set converts to and from a
LightningStore ``ResourcesUpdate`` without renaming.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from lightspan.engine.errors import ResourceError


@dataclass(frozen=True, slots=True)
class LLMResource:
    """An OpenAI-compatible chat endpoint and how to call it."""

    endpoint: str
    model: str
    api_key: str | None = None
    sampling_parameters: Mapping[str, Any] = field(default_factory=dict)
    """``max_tokens``, ``temperature``, ``top_p``... passed to the chat completion."""
    provider: str = "openai"
    """``gen_ai.provider.name`` for traces (the API family the endpoint speaks)."""
    resource_type: Literal["llm", "proxy_llm"] = "llm"
    """``proxy_llm``: Agent Lightning's LLM proxy (VERL's ``main_llm``), which attributes each
    request to a rollout through its URL: see :meth:`for_rollout`."""

    @property
    def max_tokens(self) -> int | None:
        value = self.sampling_parameters.get("max_tokens")
        return int(value) if value is not None else None

    def for_rollout(self, rollout_id: str, attempt_id: str) -> LLMResource:
        """The endpoint a rollout calls: a ``proxy_llm`` gets Agent Lightning's per-rollout
        path (``.../rollout/{rollout_id}/attempt/{attempt_id}/v1``), which its proxy turns into
        the headers that tie the call's token ids to the rollout; an ``llm`` is unchanged."""
        if self.resource_type != "proxy_llm":
            return self
        prefix = self.endpoint.rstrip("/")
        has_v1 = prefix.endswith("/v1")
        if has_v1:
            prefix = prefix[:-3]
        endpoint = f"{prefix}/rollout/{rollout_id}/attempt/{attempt_id}" + ("/v1" if has_v1 else "")
        return replace(self, endpoint=endpoint)


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A prompt with placeholders, rendered with the task's input."""

    template: str
    engine: Literal["f-string", "jinja"] = "f-string"
    resource_type: Literal["prompt_template"] = "prompt_template"

    def __post_init__(self) -> None:
        if self.engine not in ("f-string", "jinja"):
            raise ResourceError(
                f"prompt template engine {self.engine!r}: use 'f-string' or 'jinja'"
            )

    def placeholders(self) -> set[str]:
        """The top-level names the template uses (f-string templates only)."""
        if self.engine != "f-string":
            return set()
        names = set()
        for _, name, _, _ in string.Formatter().parse(self.template):
            if name:
                names.add(name.split(".")[0].split("[")[0])
        return names

    def render(self, variables: Mapping[str, Any]) -> str:
        """Fill the template; a missing variable is an error that names it."""
        if self.engine == "jinja":
            import jinja2

            env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
            try:
                return env.from_string(self.template).render(**variables)
            except jinja2.UndefinedError as e:
                raise ResourceError(f"prompt template: {e.message}") from None
        try:
            return self.template.format(**variables)
        except KeyError as e:
            raise ResourceError(
                f"prompt template needs variable {e.args[0]!r}; "
                f"the input provides {sorted(variables)}"
            ) from None


Resource = LLMResource | PromptTemplate

LONG_INPUT = "|input>"
"""Marks a long-input variant: ``<key>|input>N`` stands in for ``<key>`` in runs whose input
is longer than ``N`` characters (:func:`input_chars`)."""


def input_chars(value: Any) -> int:
    """The length of a run's input as a route measures it: a string's characters; a
    structured input's strings summed (keys not counted); other scalars as printed.

    Why text length: it is what a process sees before any model call, and on generated and
    real tasks alike the longer inputs are where a smaller model loses answers first
    (docs/performance.md 1c'')."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(input_chars(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(input_chars(v) for v in value)
    return len(str(value))


def long_input_routes(names: Any) -> list[tuple[int, str, str]]:
    """``(N, key, variant name)`` of every ``<key>|input>N`` among ``names``, by N ascending;
    a malformed threshold is an error that names the resource."""
    routes = []
    for name in names:
        if LONG_INPUT not in name:
            continue
        key, _, limit = name.rpartition(LONG_INPUT)
        if not key or not limit.isdigit():
            raise ResourceError(
                f"resource {name!r}: a long-input variant is named <key>|input>N "
                "with N a whole number of characters"
            )
        routes.append((int(limit), key, name))
    return sorted(routes)


@dataclass(frozen=True, slots=True)
class ResourceSet:
    """A named, versioned set of resources (``resources_id`` identifies one version)."""

    resources_id: str
    resources: Mapping[str, Resource]
    version: int = 1
    routes: tuple[tuple[int, str, str], ...] = field(init=False, repr=False, compare=False)
    """The long-input variants (:func:`long_input_routes`), parsed once per set: every run
    start asks for them (:meth:`for_input`); a malformed one is refused here."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "routes", tuple(long_input_routes(self.resources)))

    def _get(self, name: str, kind: type, label: str) -> Any:
        res = self.resources.get(name)
        if not isinstance(res, kind):
            have = sorted(k for k, v in self.resources.items() if isinstance(v, kind))
            raise ResourceError(
                f"resources {self.resources_id!r} have no {label} {name!r} ({label}s: {have})"
            )
        return res

    def resolve(self, name: str, step: str | None = None) -> str:
        """The name a step uses: ``<name>@<step>`` when the set has it, else ``<name>``.

        Why: an optimizer can give one step its own model, token budget or prompt (by
        publishing ``default@summarize``) without the workflow file changing.
        """
        if step is not None:
            scoped = f"{name}@{step}"
            if scoped in self.resources:
                return scoped
        return name

    def prompt(self, name: str, step: str | None = None) -> PromptTemplate:
        return self._get(self.resolve(name, step), PromptTemplate, "prompt template")

    def llm(self, name: str, step: str | None = None) -> LLMResource:
        return self._get(self.resolve(name, step), LLMResource, "llm")

    def for_rollout(self, rollout_id: str, attempt_id: str) -> ResourceSet:
        """This set with every ``proxy_llm`` routed for one rollout (see
        :meth:`LLMResource.for_rollout`); the set itself when it has none."""
        if not any(
            isinstance(r, LLMResource) and r.resource_type == "proxy_llm"
            for r in self.resources.values()
        ):
            return self
        routed = {
            k: v.for_rollout(rollout_id, attempt_id) if isinstance(v, LLMResource) else v
            for k, v in self.resources.items()
        }
        return replace(self, resources=routed)

    def for_input(self, value: Any) -> ResourceSet:
        """The resources a run on input ``value`` uses: every ``<key>|input>N`` variant whose
        ``N`` the input's length exceeds replaces ``<key>`` (the largest such ``N`` wins), and
        the variants themselves are dropped; the set itself when it has none.

        Why in the set: a trainer may find a cheaper set that loses answers only on long
        inputs and publish it with the old resources kept for those (``lightspan train run``,
        docs/trainer.md "Routing long inputs"); every process running the workflow then
        applies the same route, with the same ``resources_id`` in its traces."""
        routes = self.routes
        if not routes:
            return self
        n = input_chars(value)
        variants = {name for _, _, name in routes}
        chosen = {k: v for k, v in self.resources.items() if k not in variants}
        for limit, key, name in routes:
            if n > limit:
                chosen[key] = self.resources[name]
        return replace(self, resources=chosen)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Agent Lightning's resources map (name -> resource with ``resource_type``)."""
        out: dict[str, dict[str, Any]] = {}
        for name, res in self.resources.items():
            if isinstance(res, LLMResource):
                out[name] = {
                    "resource_type": res.resource_type,
                    "endpoint": res.endpoint,
                    "model": res.model,
                    "api_key": res.api_key,
                    "sampling_parameters": dict(res.sampling_parameters),
                    "provider": res.provider,
                }
            else:
                out[name] = {
                    "resource_type": "prompt_template",
                    "template": res.template,
                    "engine": res.engine,
                }
        return out

    @classmethod
    def from_dict(
        cls, resources_id: str, data: Mapping[str, Mapping[str, Any]], version: int = 1
    ) -> ResourceSet:
        """Build from Agent Lightning's resources map; unknown resource types are an error."""
        parsed: dict[str, Resource] = {}
        for name, raw in data.items():
            kind = raw.get("resource_type")
            if kind in ("llm", "proxy_llm"):
                parsed[name] = LLMResource(
                    endpoint=str(raw["endpoint"]),
                    model=str(raw["model"]),
                    api_key=raw.get("api_key"),
                    sampling_parameters=dict(raw.get("sampling_parameters") or {}),
                    provider=str(raw.get("provider") or "openai"),
                    resource_type=kind,
                )
            elif kind == "prompt_template":
                parsed[name] = PromptTemplate(
                    template=str(raw["template"]), engine=raw.get("engine", "f-string")
                )
            else:
                raise ResourceError(
                    f"resource {name!r}: resource_type {kind!r} is not supported "
                    "(use llm, proxy_llm or prompt_template)"
                )
        return cls(resources_id=resources_id, resources=parsed, version=version)


@runtime_checkable
class ResourcesProvider(Protocol):
    """Resolves the resources a run uses (``None`` asks for the latest)."""

    async def get_resources(self, resources_id: str | None = None) -> ResourceSet: ...


class StaticResources:
    """The default provider: one fixed set (or several, selectable by id)."""

    def __init__(self, *sets: ResourceSet) -> None:
        self._sets = {s.resources_id: s for s in sets}
        self._latest = sets[-1] if sets else ResourceSet("rs-empty", {})

    def add(self, resource_set: ResourceSet) -> None:
        """Make ``resource_set`` available and the latest (how a trainer's winner is adopted)."""
        self._sets[resource_set.resources_id] = resource_set
        self._latest = resource_set

    async def get_resources(self, resources_id: str | None = None) -> ResourceSet:
        if resources_id is None:
            return self._latest
        try:
            return self._sets[resources_id]
        except KeyError:
            raise ResourceError(f"unknown resources_id {resources_id!r}") from None
