"""Fetch the dashboard's files once, with the registries' own clients, into the user cache.

Why fetched and not vendored: the dashboard is Agent Lightning's (MIT), built into its 0.3.0
wheel; we never commit third-party builds. ``pip download --no-deps agentlightning==0.3.0``
gets the wheel (612 KB), checked against a pinned sha256; only its ``agentlightning/dashboard/``
folder is extracted (nothing is installed). The app's JSON viewers (a span's or a rollout's
details) use the Monaco editor, which the app loads from a public CDN; so that they work on a
machine without internet access, ``npm pack monaco-editor@0.54.0`` (the version the app asks
for; 16.7 MB, sha256-pinned) is fetched too when npm is installed, and its ``min/vs`` folder
served by the store (see :mod:`.dashboard`). Without npm those viewers still load Monaco from
the CDN when the browser can reach it.

Cache: ``$LIGHTSPAN_DASHBOARD_DIR`` or ``~/.cache/lightspan/dashboard``, one folder per pinned
package with a marker file holding the archive's sha256; written atomically under a lock, so
concurrent servers, tests and CI set-up do not collide and a partial copy is never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "AGL_REQUIREMENT",
    "AGL_WHEEL_SHA256",
    "DASHBOARD_DIR_ENV",
    "MONACO_CDN",
    "MONACO_TGZ_SHA256",
    "DashboardFetchError",
    "DashboardFiles",
    "dashboard_cache_dir",
    "fetch_dashboard",
    "fetch_monaco",
    "prepare_dashboard",
]

logger = logging.getLogger("lightspan.store.server.dashboard")

AGL_VERSION = "0.3.0"
AGL_REQUIREMENT = f"agentlightning=={AGL_VERSION}"
# sha256 of agentlightning-0.3.0-py3-none-any.whl as published on PyPI (612,187 bytes).
AGL_WHEEL_SHA256 = "ede4cf7de78368326aa97cdd1cbb5e976fd826ed94ad2de04810b8013db8bf87"
MONACO_VERSION = "0.54.0"
MONACO_SPEC = f"monaco-editor@{MONACO_VERSION}"
# sha256 of monaco-editor-0.54.0.tgz as published on the npm registry (16,716,767 bytes).
MONACO_TGZ_SHA256 = "ba863707316b0b91bb6c7d0ad96b436fcbe5a161847bf1e837b3f72597624da6"
MONACO_CDN = f"https://cdn.jsdelivr.net/npm/monaco-editor@{MONACO_VERSION}/min/vs"
DASHBOARD_DIR_ENV = "LIGHTSPAN_DASHBOARD_DIR"
MARKER = ".archive-sha256"
_TIMEOUT = 300.0


class DashboardFetchError(RuntimeError):
    """A package could not be fetched or extracted; the message says why."""


@dataclass(frozen=True)
class DashboardFiles:
    """What the store serves: the app's folder, and Monaco's ``vs`` folder when fetched."""

    app: Path
    monaco_vs: Path | None = None


def dashboard_cache_dir() -> Path:
    """Where extracted packages live: ``$LIGHTSPAN_DASHBOARD_DIR`` or the user cache."""
    env = os.environ.get(DASHBOARD_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lightspan" / "dashboard"


def _cached(folder: Path, sha256: str, must_have: str) -> Path | None:
    try:
        marker = (folder / MARKER).read_text().strip()
    except OSError:
        return None
    return folder if marker == sha256 and (folder / must_have).is_file() else None


def _install(
    cache: Path,
    name: str,
    sha256: str,
    must_have: str,
    download: Callable[[Path], Path],
    extract: Callable[[Path, Path], None],
) -> Path:
    """``cache/name`` holding the extraction of the pinned archive that ``download`` fetches."""
    target = cache / name
    found = _cached(target, sha256, must_have)
    if found is not None:
        return found
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DashboardFetchError(f"cannot create the dashboard cache {cache}: {exc}") from exc
    with _lock(cache / f".{name}.lock"):
        found = _cached(target, sha256, must_have)  # another process fetched it meanwhile
        if found is not None:
            return found
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=cache) as tmp:
            archive = download(Path(tmp) / "download")
            actual = _sha256_file(archive)
            if actual != sha256:
                raise DashboardFetchError(
                    f"checksum mismatch for {archive.name}: expected sha256 {sha256}, "
                    f"got {actual}; the file was discarded"
                )
            staged = Path(tmp) / "staged"
            extract(archive, staged)
            if not (staged / must_have).is_file():
                raise DashboardFetchError(f"{archive.name} has no {must_have}")
            (staged / MARKER).write_text(sha256 + "\n")
            if target.exists():  # a stale copy (other pin, or damaged): replace it
                shutil.rmtree(target)
            os.replace(staged, target)
    logger.info("dashboard: %s (sha256 verified) extracted to %s", name, target)
    return target


def fetch_dashboard(
    *,
    cache_dir: Path | None = None,
    pip_options: Sequence[str] = (),
    sha256: str = AGL_WHEEL_SHA256,
) -> Path:
    """The folder of Agent Lightning's dashboard (``index.html``, ``assets/``), fetched with
    ``pip download`` unless cached. ``pip_options`` go to pip (tests pass an unreachable
    index). Raises :class:`DashboardFetchError` naming the problem."""
    return _install(
        cache_dir or dashboard_cache_dir(),
        f"agentlightning-{AGL_VERSION}",
        sha256,
        "index.html",
        lambda dest: _pip_download(dest, pip_options),
        lambda wheel, dest: _extract_zip(wheel, "agentlightning/dashboard/", dest),
    )


def fetch_monaco(*, cache_dir: Path | None = None, sha256: str = MONACO_TGZ_SHA256) -> Path:
    """Monaco's ``min/vs`` folder, fetched with ``npm pack`` unless cached."""
    folder = _install(
        cache_dir or dashboard_cache_dir(),
        f"monaco-editor-{MONACO_VERSION}",
        sha256,
        "vs/loader.js",
        _npm_pack,
        lambda tgz, dest: _extract_tar(tgz, "package/min/", dest),
    )
    return folder / "vs"


def prepare_dashboard(cache_dir: Path | None = None) -> DashboardFiles | None:
    """The files for ``store serve --dashboard``; on failure, log why and return ``None`` (the
    store starts without the dashboard). Monaco is optional: its absence is only noted."""
    try:
        app = fetch_dashboard(cache_dir=cache_dir)
    except DashboardFetchError as exc:
        logger.error(
            "dashboard unavailable, serving the store without it: %s\n"
            "(the dashboard is Agent Lightning's, fetched once with `pip download --no-deps %s`; "
            "with no registry access, extract that wheel's agentlightning/dashboard/ folder into "
            "$%s/agentlightning-%s with a %s file holding the wheel's sha256)",
            exc,
            AGL_REQUIREMENT,
            DASHBOARD_DIR_ENV,
            AGL_VERSION,
            MARKER,
        )
        return None
    try:
        monaco: Path | None = fetch_monaco(cache_dir=cache_dir)
    except DashboardFetchError as exc:
        logger.warning(
            "dashboard: the JSON viewers will load the Monaco editor from %s (needs internet "
            "in the browser): %s",
            MONACO_CDN,
            exc,
        )
        monaco = None
    return DashboardFiles(app, monaco)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=_TIMEOUT, cwd=cwd
        )
    except subprocess.TimeoutExpired:
        raise DashboardFetchError(f"{what} took over {_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise DashboardFetchError(f"{what}: cannot run {cmd[0]}: {exc}") from None
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()
        if "No module named pip" in out:
            raise DashboardFetchError(f"pip is not installed in {sys.executable}")
        lines = out.splitlines()
        errors = [line for line in lines if line.startswith("ERROR")]  # pip: skip retry noise
        tail = "\n".join((errors or lines)[-6:])
        raise DashboardFetchError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def _only(dest: Path, pattern: str, what: str) -> Path:
    found = sorted(dest.glob(pattern))
    if len(found) != 1:
        raise DashboardFetchError(f"{what} left {len(found)} files matching {pattern}")
    return found[0]


def _pip_download(dest: Path, pip_options: Sequence[str]) -> Path:
    dest.mkdir(parents=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--ignore-requires-python",  # only the static files are used, never the code
        "--disable-pip-version-check",
        "--no-input",
        "--retries",  # bounded: the store waits for this before it starts
        "2",
        "--timeout",
        "15",
        "-q",
        *pip_options,
        "-d",
        str(dest),
        AGL_REQUIREMENT,
    ]
    what = f"pip download {AGL_REQUIREMENT}"
    _run(cmd, what)
    return _only(dest, "agentlightning-*.whl", what)


def _npm_pack(dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise DashboardFetchError(f"npm is not installed (it fetches {MONACO_SPEC})")
    dest.mkdir(parents=True)
    what = f"npm pack {MONACO_SPEC}"
    _run([npm, "pack", MONACO_SPEC, "--silent", "--ignore-scripts"], what, cwd=dest)
    return _only(dest, "monaco-editor-*.tgz", what)


def _safe_rel(name: str, prefix: str, archive: Path) -> tuple[str, ...] | None:
    if not name.startswith(prefix):
        return None
    rel = PurePosixPath(name[len(prefix) :])
    if rel.is_absolute() or ".." in rel.parts:
        raise DashboardFetchError(f"{archive.name}: unsafe member {name!r}")
    return rel.parts or None


def _extract_zip(archive: Path, prefix: str, dest: Path) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise DashboardFetchError(f"{archive.name} is not a valid wheel") from exc
    with zf:
        for info in zf.infolist():
            parts = None if info.is_dir() else _safe_rel(info.filename, prefix, archive)
            if parts:
                out = dest.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def _extract_tar(archive: Path, prefix: str, dest: Path) -> None:
    try:
        tf = tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError) as exc:
        raise DashboardFetchError(f"{archive.name} is not a valid package tarball") from exc
    with tf:
        for member in tf:
            parts = _safe_rel(member.name, prefix, archive) if member.isfile() else None
            if parts:
                out = dest.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                assert src is not None
                with src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """``python -m lightspan.store.server.dashboard_fetch``: fill the cache (CI set-up)."""
    del argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    files = prepare_dashboard()
    if files is None:
        return 1
    print(f"dashboard: {files.app}\nmonaco: {files.monaco_vs or 'not fetched (see above)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
