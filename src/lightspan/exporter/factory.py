"""``exporter_from_config``: the store exporter that ``agentLightning.*`` and ``OTEL_*`` ask for.

Why here and not in the instrumentation: which store, which protocol, which token, and where the
spool lives are the exporter's business; ``configure_tracing`` only asks for "the exporter to the
LightningStore" (it imports :func:`exporter_from_config`). This module is the one place that
derives an OTLP endpoint from the configuration (:func:`store_otlp_endpoint` for the store).

Target, first match wins:

1. ``agentLightning.exporter.endpoint`` (e.g. a Collector): OTLP with ``exporter.protocol``;
2. ``store.type: in_memory``: an in-process :class:`InMemoryLightningStore` (no server);
3. ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``: OTLP as the ``OTEL_*`` variables say;
4. the external store server: gRPC to ``store.grpc_address`` (default: the address's host, port
   4317) or HTTP to ``store.address`` + ``/v1/traces``, with ``store.token`` as a bearer token.

The store token is sent only to the store (case 4), never to a Collector or an ``OTEL_*``
endpoint (give those ``OTEL_EXPORTER_OTLP_HEADERS``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightspan.config import ConfigError, LightspanConfig, StoreConfig
from lightspan.exporter.exporter import LightningStoreSpanExporter
from lightspan.exporter.spool import Spool, SpoolError
from lightspan.exporter.transport import OtlpTarget, resolve_target
from lightspan.store.api.base import LightningStore

__all__ = ["exporter_from_config", "spool_dir_for", "store_otlp_endpoint", "target_from_config"]


def _env_protocol(env: Mapping[str, str]) -> str | None:
    for key in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if env.get(key, "").strip():
            return env[key].strip()
    return None


def _has_env_endpoint(env: Mapping[str, str]) -> bool:
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def _has_env_timeout(env: Mapping[str, str]) -> bool:
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TIMEOUT", "").strip()
    )


def store_otlp_endpoint(store: StoreConfig, protocol: str) -> str:
    """The store server's OTLP intake: gRPC ``store.grpc_address``, else the host of
    ``store.address`` on port 4317 (``https://`` kept, so the connection uses TLS); HTTP
    ``store.address`` + ``/v1/traces``."""
    if protocol.strip().lower() == "grpc":
        host = urlsplit(store.address).hostname or "localhost"
        endpoint = store.grpc_address or f"{host}:4317"
        if "://" not in endpoint and store.address.startswith("https://"):
            endpoint = f"https://{endpoint}"
        return endpoint
    return store.address.rstrip("/") + "/v1/traces"


def target_from_config(
    cfg: LightspanConfig, environ: Mapping[str, str] | None = None
) -> OtlpTarget | None:
    """The OTLP target of the configuration, or ``None`` for the in-process store."""
    env = os.environ if environ is None else environ
    al = cfg.agentLightning
    exp, store = al.exporter, al.store
    timeout = None if _has_env_timeout(env) else store.timeout_seconds
    try:
        if exp.endpoint:
            return resolve_target(exp.protocol, exp.endpoint, timeout=timeout, environ=env)
        if store.type.value == "in_memory":
            return None
        protocol = _env_protocol(env) or exp.protocol
        if _has_env_endpoint(env):
            return resolve_target(protocol, None, timeout=timeout, environ=env)
        headers = {"authorization": f"Bearer {store.token}"} if store.token else None
        endpoint = store_otlp_endpoint(store, protocol)
        return resolve_target(protocol, endpoint, headers=headers, timeout=timeout, environ=env)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def spool_dir_for(base: str | os.PathLike[str], target: OtlpTarget) -> Path:
    """``<base>/<protocol>-<host_port>-<hash>``: one spool per target, so a batch is never
    replayed to a different target by a process configured differently."""
    endpoint = target.endpoint
    # An HTTP endpoint is a URL (``http://host:port/v1/traces``), a gRPC one ``host:port``.
    netloc = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").netloc
    slug = re.sub(r"[^A-Za-z0-9]+", "_", netloc or endpoint)
    digest = hashlib.sha1(f"{target.protocol} {target.endpoint}".encode()).hexdigest()[:8]
    proto = "grpc" if target.protocol == "grpc" else "http"
    return Path(os.path.expanduser(os.fspath(base))) / f"{proto}-{slug.strip('_')}-{digest}"


def exporter_from_config(
    cfg: LightspanConfig,
    *,
    store: LightningStore | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> LightningStoreSpanExporter:
    """The store exporter for ``cfg`` (see the module doc for the target).

    ``store``: for ``in_memory``, add spans to this store instead of a new one (the caller
    manages its lifecycle). ``options`` go to :class:`LightningStoreSpanExporter` (retry and
    backoff knobs).
    """
    target = target_from_config(cfg, environ)
    if target is None:
        if store is not None:
            return LightningStoreSpanExporter.in_process(store, **options)
        from lightspan.store.backends.factory import create_store

        return LightningStoreSpanExporter.in_process(
            create_store("memory"), owns_store=True, **options
        )
    spool_cfg = cfg.agentLightning.exporter.spool
    spool = None
    if spool_cfg.enabled and spool_cfg.max_bytes > 0:
        path = spool_dir_for(spool_cfg.path, target)
        try:
            spool = Spool(path, spool_cfg.max_bytes)
        except SpoolError as e:
            raise ConfigError(f"agentLightning.exporter.spool.path: {e}") from None
    return LightningStoreSpanExporter(target=target, spool=spool, **options)
