"""Publishing resource sets for a workflow: ``<workflow>:v<n>`` ids, history, rollback.

Why new ids and never in-place updates: a trace records the ``resources_id`` that produced
it, so an id must always mean the same resources; a rollback republishes an older set's
content under the next version (it becomes the latest, the history keeps every step).
"""

from __future__ import annotations

import re
from typing import Any

from lightspan.trainer.resmap import ResourcesMap


class PublishError(RuntimeError):
    """A publish or rollback was refused; the message says why."""


def _version(workflow: str, rid: str) -> int | None:
    m = re.fullmatch(re.escape(workflow) + r":v(\d+)", rid)
    return int(m.group(1)) if m else None


async def history(store: Any, workflow: str) -> list[dict[str, Any]]:
    """Published sets of ``workflow``, oldest first: id, version, create/update time."""
    page = await store.query_resources(resources_id_contains=f"{workflow}:v")
    rows = []
    for r in page.items:
        v = _version(workflow, r.resources_id)
        if v is not None:
            rows.append(
                {
                    "resources_id": r.resources_id,
                    "version": v,
                    "create_time": r.create_time,
                    "update_time": r.update_time,
                }
            )
    return sorted(rows, key=lambda x: x["version"])


async def latest_published(store: Any, workflow: str) -> Any | None:
    rows = await history(store, workflow)
    if not rows:
        return None
    return await store.get_resources_by_id(rows[-1]["resources_id"])


async def publish(store: Any, workflow: str, resources: ResourcesMap) -> str:
    """Store ``resources`` (complete) as the next ``<workflow>:v<n>`` through the runner's
    :func:`lightspan.runner.publish`, so it becomes the workflow's latest set."""
    if not resources:
        raise PublishError("refusing to publish an empty resource set")
    from lightspan.engine import ResourceSet
    from lightspan.runner import publish as runner_publish

    rows = await history(store, workflow)
    tag = f"v{(rows[-1]['version'] if rows else 0) + 1}"
    update = await runner_publish(store, workflow, tag, ResourceSet.from_dict(tag, resources))
    return update.resources_id


async def rollback(store: Any, workflow: str, to: str | None = None) -> str:
    """Republish ``to`` (default: the version before the latest) as the next version."""
    rows = await history(store, workflow)
    if not rows:
        raise PublishError(f"workflow {workflow!r} has no published resources to roll back")
    if to is None:
        if len(rows) < 2:
            raise PublishError(f"workflow {workflow!r} has only {rows[0]['resources_id']}")
        to = rows[-2]["resources_id"]
    target = await store.get_resources_by_id(to)
    if target is None or _version(workflow, to) is None:
        raise PublishError(f"{to!r} is not a published resource set of {workflow!r}")
    data = {
        k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v
        for k, v in target.resources.items()
    }
    return await publish(store, workflow, data)
