"""Trainer records kept in the store as resources without disturbing "the latest" set.

Why: ``update_resources`` makes what it writes the store's latest resources, which runners
and production processes adopt; a candidate or a scheduler's state must never become that.
After writing, the set that was latest before is written again (same id, same content), so it
is the latest again.
"""

from __future__ import annotations

import json
from typing import Any


def _as_map(update: Any) -> dict[str, Any]:
    return {
        k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v
        for k, v in update.resources.items()
    }


def to_store(resources: dict[str, Any]) -> dict[str, Any]:
    """A resources map as the store's models (what its clients serialize without warnings)."""
    from pydantic import TypeAdapter

    from lightspan.store.api.models import NamedResources

    return TypeAdapter(NamedResources).validate_python(resources)


async def write_aside(store: Any, resources_id: str, resources: dict[str, Any]) -> None:
    before = await store.get_latest_resources()
    await store.update_resources(resources_id, to_store(resources))
    if before is not None and before.resources_id != resources_id:
        await store.update_resources(before.resources_id, before.resources)


async def read_json(store: Any, resources_id: str) -> dict[str, Any] | None:
    r = await store.get_resources_by_id(resources_id)
    if r is None or "state" not in r.resources:
        return None
    return json.loads(_as_map(r)["state"]["template"])


async def write_json(store: Any, resources_id: str, data: dict[str, Any]) -> None:
    await write_aside(
        store,
        resources_id,
        {
            "state": {
                "resource_type": "prompt_template",
                "engine": "jinja",
                "template": json.dumps(data),
            }
        },
    )
