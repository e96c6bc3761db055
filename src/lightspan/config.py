"""lightspan's configuration: the ``core-config.yaml`` file, validated, with environment overrides.

Why one module: every stage (engine prices, instrumentation sampling, exporter endpoint,
store address, trainer schedule) reads the same file, and a bad key must be reported the
same way everywhere: by its dotted path and the values it allows.

Importing this module imports no OpenTelemetry package.

Precedence, lowest to highest: built-in defaults < the file < environment variables.
The file is ``$LIGHTSPAN_CONFIG`` if set, else ``./core-config.yaml`` if it exists, else none
(all defaults: tracing off). Environment variables:

* ``LIGHTSPAN_<SECTION>__<KEY>...``: any key by its path, ``__`` between levels, case-insensitive,
  e.g. ``LIGHTSPAN_AGENTLIGHTNING__TRACING__SAMPLING_RATIO=0.1``. Values are parsed as YAML
  scalars (``true``, ``0.25``, ``null``).
* Short aliases: ``LIGHTSPAN_ENABLED`` (agentLightning.enabled), ``LIGHTSPAN_STORE_TYPE``,
  ``LIGHTSPAN_STORE_ADDRESS``, ``LIGHTSPAN_STORE_TOKEN``, ``LIGHTSPAN_SAMPLING_RATIO``,
  ``LIGHTSPAN_CAPTURE_CONTENT``, ``LIGHTSPAN_LLM_ENDPOINT``, ``LIGHTSPAN_LLM_MODEL``.
* The standard ``OTEL_*`` variables (sampler, exporter endpoint, headers, ...) are honoured by
  the instrumentation and exporter, following the OpenTelemetry specification.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CONFIG_FILE = "core-config.yaml"


class ConfigError(ValueError):
    """A configuration file or variable is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)


class StoreType(StrEnum):
    external = "external"
    in_memory = "in_memory"


class StoreConfig(_Section):
    """Where spans go: ``in_memory`` (in-process, development) or an ``external`` store server."""

    type: StoreType = StoreType.external
    address: str = "http://localhost:4747"
    """REST / OTLP-HTTP address of the store server."""
    grpc_address: str | None = None
    """OTLP/gRPC address (``host:port``); default: the address's host on port 4317."""
    token: str | None = Field(default=None, repr=False)
    """Bearer token for a store server started with ``--token``."""
    timeout_seconds: float = Field(default=10.0, gt=0)


class Algorithm(StrEnum):
    APO = "APO"
    VERL = "VERL"


class TrainingInterval(StrEnum):
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"


class OptimizationConfig(_Section):
    enabled: bool = False
    algorithm: Algorithm = Algorithm.APO
    training_interval: TrainingInterval = TrainingInterval.weekly


class SpoolConfig(_Section):
    """On-disk spool for spans the store could not take (replayed when it is back)."""

    enabled: bool = True
    path: str = "~/.cache/lightspan/spool"
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)


class ExporterConfig(_Section):
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    endpoint: str | None = None
    """Overrides the store address (e.g. a Collector at ``localhost:4317``);
    ``OTEL_EXPORTER_OTLP_*`` variables apply when this is unset."""
    max_queue_size: int = Field(default=65536, ge=1)
    max_export_batch_size: int = Field(default=512, ge=1)
    schedule_delay_ms: float = Field(default=500.0, gt=0)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)


class TracingConfig(_Section):
    sampling_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of workflow traces kept (whole traces); runner-started rollouts are always kept."""
    capture_content: bool = False
    """Record prompts and completions on LLM spans (off by default for privacy)."""
    service_name: str = "lightspan-workflow"


class AgentLightningConfig(_Section):
    enabled: bool = False
    store: StoreConfig = Field(default_factory=StoreConfig)
    optimization: OptimizationConfig = Field(default_factory=OptimizationConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    exporter: ExporterConfig = Field(default_factory=ExporterConfig)


class ModelPrice(_Section):
    """Price of a model in currency units per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class LLMConfig(_Section):
    """Default OpenAI-compatible endpoint for LLM tasks (a resource may override it)."""

    endpoint: str = "http://127.0.0.1:8080/v1"
    model: str = "smollm2-135m"
    api_key: str | None = Field(default=None, repr=False)
    timeout_seconds: float = Field(default=120.0, gt=0)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """Per-model prices; a model missing here costs 0 and is reported as unpriced."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


class LightspanConfig(_Section):
    agentLightning: AgentLightningConfig = Field(default_factory=AgentLightningConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    source: str | None = Field(default=None, exclude=True)
    """Where the file came from (for messages), ``None`` for defaults only."""


_ALIASES: dict[str, tuple[str, ...]] = {
    "LIGHTSPAN_ENABLED": ("agentLightning", "enabled"),
    "LIGHTSPAN_STORE_TYPE": ("agentLightning", "store", "type"),
    "LIGHTSPAN_STORE_ADDRESS": ("agentLightning", "store", "address"),
    "LIGHTSPAN_STORE_TOKEN": ("agentLightning", "store", "token"),
    "LIGHTSPAN_SAMPLING_RATIO": ("agentLightning", "tracing", "sampling_ratio"),
    "LIGHTSPAN_CAPTURE_CONTENT": ("agentLightning", "tracing", "capture_content"),
    "LIGHTSPAN_LLM_ENDPOINT": ("llm", "endpoint"),
    "LIGHTSPAN_LLM_MODEL": ("llm", "model"),
}
_NOT_KEYS = {"LIGHTSPAN_CONFIG"}


def _field_names(model: type[BaseModel]) -> dict[str, str]:
    return {name.lower(): name for name in model.model_fields}


def _submodel(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """``(model, keyed)``: the section model a field holds, and whether it sits in a mapping."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) is dict:
        value = get_args(annotation)[1]
        if isinstance(value, type) and issubclass(value, BaseModel):
            return value, True
    return None, False


def _resolve_path(parts: list[str], env_name: str) -> tuple[str, ...]:
    """Map case-insensitive path parts onto the real field names, or raise naming the variable.

    Keys of free-form mappings (model names under ``llm.prices``) keep their case.
    """
    model: type[BaseModel] | None = LightspanConfig
    out: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        if model is None:
            out.extend(parts[i:])
            break
        names = _field_names(model)
        if part.lower() not in names:
            where = ".".join(out) or "the top level"
            raise ConfigError(
                f"environment variable {env_name}: unknown key {part!r} under {where}; "
                f"allowed: {', '.join(sorted(model.model_fields))}"
            )
        name = names[part.lower()]
        out.append(name)
        model, keyed = _submodel(model.model_fields[name].annotation)
        i += 1
        if keyed and i < len(parts):
            out.append(parts[i])
            i += 1
    return tuple(out)


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in path[:-1]:
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            nxt = {}
            node[key] = nxt
        node = nxt
    node[path[-1]] = value


def env_overrides(environ: dict[str, str] | None = None) -> list[tuple[tuple[str, ...], Any, str]]:
    """The ``(path, value, variable)`` overrides that the environment asks for."""
    environ = dict(os.environ if environ is None else environ)
    found: list[tuple[tuple[str, ...], Any, str]] = []
    for name, raw in sorted(environ.items()):
        upper = name.upper()
        if not upper.startswith("LIGHTSPAN_") or upper in _NOT_KEYS:
            continue
        value = yaml.safe_load(raw) if raw != "" else None
        if upper in _ALIASES:
            found.append((_ALIASES[upper], value, name))
        elif "__" in upper:
            parts = name[len("LIGHTSPAN_") :].split("__")
            found.append((_resolve_path(parts, name), value, name))
    return found


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        ctx = e.get("ctx") or {}
        if "expected" in ctx and "expected" not in msg and str(ctx["expected"]) not in msg:
            msg = f"{msg} (allowed: {ctx['expected']})"
        lines.append(f"{loc}: {msg} (got {e.get('input')!r})")
    return f"invalid configuration in {source}:\n  " + "\n  ".join(lines)


def parse_config(
    data: dict[str, Any] | None,
    *,
    source: str = "<dict>",
    environ: dict[str, str] | None = None,
) -> LightspanConfig:
    """Validate a configuration mapping (plus environment overrides) into a LightspanConfig."""
    merged: dict[str, Any] = dict(data or {})
    if not isinstance(data, dict | None):
        raise ConfigError(f"invalid configuration in {source}: the top level must be a mapping")
    overrides = env_overrides(environ)
    for path, value, _var in overrides:
        _set_path(merged, path, value)
    try:
        cfg = LightspanConfig.model_validate(merged)
    except ValidationError as err:
        src = source + (" (with LIGHTSPAN_* environment overrides)" if overrides else "")
        raise ConfigError(_format_validation_error(err, src)) from None
    cfg.source = source
    return cfg


def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: dict[str, str] | None = None
) -> LightspanConfig:
    """Load the configuration file (see the module docstring for which one) and the environment."""
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get("LIGHTSPAN_CONFIG") or (
            DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).is_file() else None
        )
    if path is None:
        return parse_config({}, source="defaults", environ=dict(env))
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {p}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"configuration file {p} is not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"configuration file {p}: the top level must be a mapping")
    return parse_config(data, source=str(p), environ=dict(env))


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def parse_flag(raw: str | None, default: bool = False) -> bool:
    """An on/off environment value: ``1``/``true``/``yes``/``on`` (any case, spaces ignored) is
    on, unset or empty means ``default``, anything else (``0``, ``false``, ``off``...) is off.

    The one parser of boolean variables (``LIGHTSPAN_*`` switches read outside the
    configuration, ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``,
    ``OTEL_EXPORTER_OTLP_INSECURE``), so every switch accepts the same words."""
    value = (raw or "").strip().lower()
    if not value:
        return default
    return value in TRUE_WORDS


def env_flag(name: str, environ: Mapping[str, str] | None = None, *, default: bool = False) -> bool:
    """:func:`parse_flag` of the variable ``name`` (``environ`` defaults to ``os.environ``)."""
    return parse_flag((os.environ if environ is None else environ).get(name), default)
