"""Resources from the store: which set a run uses, and how a store set overlays the workflow's.

Why an overlay and not a replacement: optimizers publish only what they optimize. Agent
Lightning's APO publishes one prompt template, VERL one LLM called ``main_llm``, our trainer a
few per-step entries. The workflow's own :class:`~lightspan.engine.ResourceSet` (from its YAML
file or code) stays the base; the store set replaces or adds entries by name (:func:`overlay`).

Why ids namespaced by workflow: several workflows may share one store. A set published for
workflow ``qa`` is named ``qa:<tag>`` (:func:`namespaced_id`); a rollout without a
``resources_id`` runs with the latest ``qa:*`` set (:meth:`ResourcesProvider.latest_update`),
never with another workflow's. A rollout's own ``resources_id`` wins (APO's ``v0``, ``v1``...
and VERL's ``rs-...`` ids are used as given), except an id namespaced for *another* workflow:
the store stamps the store-wide latest id on rollouts enqueued without one (Agent Lightning
v0.3 semantics), which in a shared store may be another workflow's set, so such an id is
treated as "none given" and the latest set of this workflow is used.

Why a TTL cache: a runner resolves resources for every rollout and a production process for
every run; within ``ttl`` seconds (2 by default) they are served from memory, and a newly
published set is adopted within ``ttl`` seconds, without restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lightspan.engine.errors import ResourceError
from lightspan.engine.resources import (
    LLMResource,
    PromptTemplate,
    Resource,
    ResourceSet,
    StaticResources,
)
from lightspan.engine.resources import ResourcesProvider as EngineResourcesProvider

if TYPE_CHECKING:
    from lightspan.engine.runtime import Workflow
    from lightspan.store.api.base import LightningStore
    from lightspan.store.api.models import ResourcesUpdate

__all__ = [
    "DEFAULT_LLM",
    "MAIN_LLM",
    "NAMESPACE_SEP",
    "ResourcesProvider",
    "namespaced_id",
    "overlay",
    "parse_store_resource",
    "publish",
    "to_store_resources",
    "workflow_of",
]

log = logging.getLogger("lightspan.runner.resources")

NAMESPACE_SEP = ":"
MAIN_LLM = "main_llm"
"""The LLM name Agent Lightning's VERL publishes; it becomes the workflow's :data:`DEFAULT_LLM`."""
DEFAULT_LLM = "default"
"""The LLM resource an LLM step uses unless its definition names another."""


def namespaced_id(workflow: str, tag: str) -> str:
    """``<workflow>:<tag>``: the id a set published for ``workflow`` should carry."""
    if NAMESPACE_SEP in workflow:
        raise ValueError(f"workflow name {workflow!r} must not contain {NAMESPACE_SEP!r}")
    return f"{workflow}{NAMESPACE_SEP}{tag}"


def workflow_of(resources_id: str) -> str | None:
    """The workflow a namespaced id belongs to, or ``None`` for an id without a namespace."""
    head, sep, _ = resources_id.partition(NAMESPACE_SEP)
    return head if sep else None


def parse_store_resource(
    name: str, raw: Any, *, rollout_id: str | None = None, attempt_id: str | None = None
) -> Resource:
    """One store resource (a dict or a pydantic model of Agent Lightning's format) as an engine
    resource. ``proxy_llm`` endpoints are routed per attempt (``.../rollout/{r}/attempt/{a}``,
    as Agent Lightning's runner does) when the ids are given."""
    if hasattr(raw, "model_dump"):
        raw = raw.model_dump(mode="json")
    if not isinstance(raw, Mapping):
        raise ResourceError(f"store resource {name!r} is not a mapping: {raw!r}")
    kind = raw.get("resource_type")
    try:
        if kind in ("llm", "proxy_llm"):
            endpoint = str(raw["endpoint"])
            if kind == "proxy_llm" and (rollout_id is not None or attempt_id is not None):
                from lightspan.store.api.models import ProxyLLM

                endpoint = ProxyLLM.model_validate(dict(raw)).get_base_url(rollout_id, attempt_id)
            return LLMResource(
                endpoint=endpoint,
                model=str(raw["model"]),
                api_key=raw.get("api_key"),
                sampling_parameters=dict(raw.get("sampling_parameters") or {}),
                provider=str(raw.get("provider") or "openai"),
            )
        if kind == "prompt_template":
            return PromptTemplate(
                template=str(raw["template"]), engine=raw.get("engine", "f-string")
            )
    except KeyError as e:
        raise ResourceError(f"store resource {name!r} ({kind}) lacks field {e.args[0]!r}") from None
    raise ResourceError(
        f"store resource {name!r}: resource_type {kind!r} is not supported "
        "(use llm, proxy_llm or prompt_template)"
    )


def overlay(
    resources: ResourceSet,
    store_map: Mapping[str, Any],
    resources_id: str,
    *,
    version: int = 1,
    rollout_id: str | None = None,
    attempt_id: str | None = None,
) -> ResourceSet:
    """The workflow's ``resources`` with a store set laid over them, named ``resources_id``.

    Rules, in order:

    1. every store entry replaces the workflow's entry of the same name, or is added (per-step
       entries such as ``default@summarize`` or ``ask@answer`` are added this way); replacing a
       prompt by an LLM or the reverse is an error that names the entry;
    2. ``main_llm`` (VERL's name) also becomes ``default``, unless the store set names
       ``default`` itself;
    3. a store set whose prompt templates are all unknown to the workflow and that holds exactly
       one, laid over a workflow with exactly one prompt template: it replaces that template
       (APO publishes the template under the name its seed had, which may not be ours).
    """
    parsed = {
        name: parse_store_resource(name, raw, rollout_id=rollout_id, attempt_id=attempt_id)
        for name, raw in store_map.items()
    }
    merged: dict[str, Resource] = dict(resources.resources)
    for name, res in parsed.items():
        old = merged.get(name)
        if old is not None and type(old) is not type(res):
            raise ResourceError(
                f"store resources {resources_id!r}: {name!r} is a {res.resource_type} but the "
                f"workflow's {name!r} is a {old.resource_type}"
            )
        merged[name] = res
    main = parsed.get(MAIN_LLM)
    if isinstance(main, LLMResource) and DEFAULT_LLM not in parsed:
        merged[DEFAULT_LLM] = main
    store_prompts = [n for n, r in parsed.items() if isinstance(r, PromptTemplate)]
    base_prompts = [n for n, r in resources.resources.items() if isinstance(r, PromptTemplate)]
    if (
        len(store_prompts) == 1
        and len(base_prompts) == 1
        and store_prompts[0] not in resources.resources
    ):
        merged[base_prompts[0]] = parsed[store_prompts[0]]
    return ResourceSet(resources_id=resources_id, resources=merged, version=version)


def to_store_resources(resources: ResourceSet | Mapping[str, Resource]) -> dict[str, Any]:
    """Engine resources as the store's ``NamedResources`` (Agent Lightning's models)."""
    from pydantic import TypeAdapter

    from lightspan.store.api.models import NamedResources

    items = resources.resources if isinstance(resources, ResourceSet) else resources
    raw = ResourceSet("tmp", dict(items)).to_dict()
    return TypeAdapter(NamedResources).validate_python(raw)


async def publish(
    store: LightningStore,
    workflow: str,
    tag: str,
    resources: ResourceSet | Mapping[str, Resource],
) -> ResourcesUpdate:
    """Publish ``resources`` (only what changes: they overlay the workflow's own) as
    ``<workflow>:<tag>``; it becomes this workflow's latest set. Returns the store's answer
    (``resources_id`` to enqueue rollouts with)."""
    return await store.update_resources(namespaced_id(workflow, tag), to_store_resources(resources))


class ResourcesProvider:
    """The engine's resources provider, backed by a LightningStore, with a TTL cache.

    ``get_resources(None)`` is the latest set of this workflow (ids ``<workflow>:*``; with
    ``adopt_unnamespaced=True`` the store's latest set when no namespaced one exists), laid over
    the workflow's own set; without any, the workflow's own set. ``get_resources(id)`` is that
    set; an id the store does not know is a :class:`~lightspan.engine.ResourceError`.

    When the store cannot be reached, the last value fetched is served (stale); without one,
    ``get_resources(None)`` falls back to the workflow's own set (logged), so a production run
    never fails because the store is down; an explicit id raises.

    A production process adopts published resources without restart::

        provider = ResourcesProvider.attach(workflow, LightningStoreClient(url))
        await workflow.run(...)   # uses the latest "<workflow>:*" set, refreshed every ttl s
    """

    def __init__(
        self,
        store: LightningStore,
        workflow: str,
        base: ResourceSet | EngineResourcesProvider | None = None,
        *,
        ttl: float = 2.0,
        adopt_unnamespaced: bool = False,
        scan_limit: int = 50,
    ) -> None:
        self.store = store
        self.workflow = workflow
        if isinstance(base, ResourceSet):
            base = StaticResources(base)
        self.base: EngineResourcesProvider = base or StaticResources()
        self.ttl = ttl
        self.adopt_unnamespaced = adopt_unnamespaced
        self.scan_limit = scan_limit
        self._cache: dict[str | None, tuple[float, ResourcesUpdate | None]] = {}
        self._overlays: dict[tuple[str, int, str, int], ResourceSet] = {}
        self.fetches = 0
        """Store round trips made (cache misses): a measure of what the cache saves."""

    @classmethod
    def attach(cls, workflow: Workflow, store: LightningStore, **options: Any) -> ResourcesProvider:
        """Make ``workflow`` resolve its resources through the store (its current provider
        becomes the base). Returns the provider."""
        base = workflow.resources
        if isinstance(base, ResourcesProvider):
            base = base.base
        provider = cls(store, workflow.name, base, **options)
        workflow.resources = provider
        return provider

    def invalidate(self) -> None:
        """Forget cached store answers (the next call fetches)."""
        self._cache.clear()

    async def get_resources(self, resources_id: str | None = None) -> ResourceSet:
        return await self.for_rollout(resources_id)

    async def for_rollout(
        self,
        resources_id: str | None,
        rollout_id: str | None = None,
        attempt_id: str | None = None,
    ) -> ResourceSet:
        """The set a rollout runs with (``proxy_llm`` endpoints routed to its attempt)."""
        if resources_id is not None and workflow_of(resources_id) not in (None, self.workflow):
            resources_id = None  # another workflow's set (see the module doc)
        base = await self.base.get_resources(None)
        update = await self._update(resources_id)
        if update is None:
            if resources_id is not None:
                raise ResourceError(
                    f"unknown resources_id {resources_id!r}: the store has no such resources"
                )
            return base
        proxied = any(_kind(r) == "proxy_llm" for r in update.resources.values())
        key = (update.resources_id, update.version, base.resources_id, id(base))
        if not proxied:
            cached = self._overlays.get(key)
            if cached is not None:
                return cached
        result = overlay(
            base,
            update.resources,
            update.resources_id,
            version=update.version,
            rollout_id=rollout_id if proxied else None,
            attempt_id=attempt_id if proxied else None,
        )
        if not proxied:
            if len(self._overlays) > 256:
                self._overlays.clear()
            self._overlays[key] = result
        return result

    async def _update(self, resources_id: str | None) -> ResourcesUpdate | None:
        now = time.monotonic()
        hit = self._cache.get(resources_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            self.fetches += 1
            if resources_id is None:
                update = await self.latest_update()
            else:
                update = await self.store.get_resources_by_id(resources_id)
        except Exception as e:
            if hit is not None:
                log.warning("resources: store unreachable (%s); using the cached set", e)
                return hit[1]
            if resources_id is None:
                log.warning("resources: store unreachable (%s); using the workflow's own set", e)
                return None
            raise
        self._cache[resources_id] = (now + self.ttl, update)
        return update

    async def latest_update(self) -> ResourcesUpdate | None:
        """The newest set named ``<workflow>:*`` in the store (uncached)."""
        prefix = self.workflow + NAMESPACE_SEP
        page = await self.store.query_resources(
            resources_id_contains=prefix,
            sort_by="update_time",
            sort_order="desc",
            limit=self.scan_limit,
        )
        for update in page.items:
            if update.resources_id.startswith(prefix):
                return update
        if self.adopt_unnamespaced:
            latest = await self.store.get_latest_resources()
            if latest is not None and workflow_of(latest.resources_id) in (None, self.workflow):
                return latest
        return None


def _kind(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return raw.get("resource_type")
    return getattr(raw, "resource_type", None)
