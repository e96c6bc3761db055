"""Open a LightningStore by backend name or from the configuration.

Why a factory: ``lightspan store serve --backend ...``, the trainer and tests choose a backend
by name; the database drivers are imported only for the backend asked for, so the ``memory``
store needs no optional dependency.
"""

from __future__ import annotations

from typing import Any

from lightspan.store.api.base import LightningStore

BACKENDS = ("memory", "sqlite", "postgres")
_ALIASES = {"in_memory": "memory", "inmemory": "memory", "postgresql": "postgres", "pg": "postgres"}


def create_store(backend: str, **options: Any) -> LightningStore:
    """A store of the named backend, not yet started.

    Options: ``memory``: ``scan_interval``, ``auto_register_rollouts``,
    ``auto_rollout_timeout``, ``wait_poll_interval``;
    ``sqlite``: also ``path`` (alias ``db``), ``synchronous``, ``span_id_cache``; ``postgres``:
    also ``dsn`` (alias ``db``), ``min_size``, ``max_size``, ``span_id_cache``.
    """
    name = _ALIASES.get(backend.lower(), backend.lower())
    if name == "memory":
        from lightspan.store.backends.memory import InMemoryLightningStore

        options.pop("db", None)
        return InMemoryLightningStore(**options)
    if name == "sqlite":
        from lightspan.store.backends.sqlite import SqliteLightningStore

        if "db" in options:
            options["path"] = options.pop("db")
        if "path" not in options:
            raise ValueError("the sqlite backend needs a database file path (--db / path=)")
        return SqliteLightningStore(**options)
    if name == "postgres":
        from lightspan.store.backends.postgres import PostgresLightningStore

        if "db" in options:
            options["dsn"] = options.pop("db")
        if "dsn" not in options:
            raise ValueError("the postgres backend needs a connection string (--db / dsn=)")
        return PostgresLightningStore(**options)
    raise ValueError(f"unknown store backend {backend!r}; choose one of: {', '.join(BACKENDS)}")


async def open_store(backend: str, **options: Any) -> LightningStore:
    """:func:`create_store`, then ``await store.start()`` (schema created, scanner running)."""
    store = create_store(backend, **options)
    await store.start()
    return store


def store_from_config(config: Any) -> LightningStore:
    """The in-process store for ``agentLightning.store.type: in_memory`` (a LightspanConfig or its
    StoreConfig). ``external`` stores are reached through the HTTP client instead, so asking
    for one here is an error that says so."""
    store_cfg = getattr(getattr(config, "agentLightning", None), "store", None) or config
    kind = getattr(store_cfg.type, "value", store_cfg.type)
    if kind == "in_memory":
        return create_store("memory")
    raise ValueError(
        f"store.type is {kind!r}: use the LightningStore HTTP client for {store_cfg.address}; "
        "only 'in_memory' opens an in-process store"
    )
