"""Agent Lightning's own web dashboard, served by ``lightspan store serve --dashboard``.

Why Agent Lightning's and not our own: its 0.3.0 wheel (MIT) ships a built single-page app
(Rollouts, Traces, Resources, Runners, Settings) that speaks only the store's REST API, which
this store implements route for route. We do not vendor it: the wheel is fetched once with the
ordinary registry client (``pip download --no-deps``), checked against a pinned sha256, and its
``agentlightning/dashboard/`` folder is extracted into the user cache (``$LIGHTSPAN_DASHBOARD_DIR``
or ``~/.cache/lightspan/dashboard``), like the local models. Nothing is installed.

Serving follows Agent Lightning's server: ``/assets/*`` are the hashed (immutable) files, ``/``
and every other non-API path answer ``index.html`` so the app's client-side routes work on
reload, ``/v1/*`` stays the API and an unknown API path stays 404.

With a token (``--token``) the app itself cannot send a bearer header (it has no such setting),
so the browser signs in once: the dashboard's pages and assets are public static files (they
hold no data); opening one without a session shows a sign-in form, and the right token sets a
session cookie (HttpOnly, SameSite=Strict, an HMAC of the token, never the token). That cookie
grants **read-only** access: GET/HEAD requests to the API from the store's own origin. Writes,
OTLP intake, ``/metrics`` and every request from another origin still need the bearer header.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import html
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import BearerAuthMiddleware

__all__ = [
    "AGL_REQUIREMENT",
    "AGL_WHEEL_SHA256",
    "DASHBOARD_DIR_ENV",
    "LOGIN_PATH",
    "SESSION_COOKIE",
    "DashboardAuthMiddleware",
    "DashboardFetchError",
    "cached_dashboard",
    "dashboard_cache_dir",
    "dashboard_routes",
    "fetch_dashboard",
    "prepare_dashboard",
]

logger = logging.getLogger("lightspan.store.dashboard")

AGL_VERSION = "0.3.0"
AGL_REQUIREMENT = f"agentlightning=={AGL_VERSION}"
# sha256 of agentlightning-0.3.0-py3-none-any.whl as published on PyPI (612,187 bytes).
AGL_WHEEL_SHA256 = "ede4cf7de78368326aa97cdd1cbb5e976fd826ed94ad2de04810b8013db8bf87"
DASHBOARD_DIR_ENV = "LIGHTSPAN_DASHBOARD_DIR"
_MEMBER_PREFIX = "agentlightning/dashboard/"
_MARKER = ".wheel-sha256"

SESSION_COOKIE = "lightspan_dashboard"
LOGIN_PATH = "/_lightspan/login"
_READ_METHODS = frozenset({"GET", "HEAD"})


class DashboardFetchError(RuntimeError):
    """The dashboard could not be fetched or extracted; the message says why and what to do."""


# --------------------------------------------------------------------------- fetch and cache


def dashboard_cache_dir() -> Path:
    """Where extracted dashboards live: ``$LIGHTSPAN_DASHBOARD_DIR`` or the user cache."""
    env = os.environ.get(DASHBOARD_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lightspan" / "dashboard"


def cached_dashboard(cache_dir: Path | None = None, sha256: str = AGL_WHEEL_SHA256) -> Path | None:
    """The extracted dashboard folder when the cache holds the pinned one, else ``None``."""
    folder = (cache_dir or dashboard_cache_dir()) / f"agentlightning-{AGL_VERSION}"
    try:
        marker = (folder / _MARKER).read_text().strip()
    except OSError:
        return None
    if marker != sha256 or not (folder / "index.html").is_file():
        return None
    return folder


def fetch_dashboard(
    *,
    cache_dir: Path | None = None,
    pip_options: Sequence[str] = (),
    sha256: str = AGL_WHEEL_SHA256,
) -> Path:
    """Make sure the pinned dashboard is extracted in the cache and return its folder.

    Downloads the wheel only when the cache does not hold it. ``pip_options`` are added to the
    ``pip download`` call (tests pass an unreachable index). Raises
    :class:`DashboardFetchError` naming the problem; a partial extraction is never left behind.
    """
    cache = cache_dir or dashboard_cache_dir()
    found = cached_dashboard(cache, sha256)
    if found is not None:
        return found
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DashboardFetchError(f"cannot create the dashboard cache {cache}: {exc}") from exc
    with _lock(cache / ".fetch.lock"):
        found = cached_dashboard(cache, sha256)  # another process may have fetched it
        if found is not None:
            return found
        with tempfile.TemporaryDirectory(prefix="lightspan-dashboard-", dir=cache) as tmp:
            wheel = _download(Path(tmp), pip_options)
            actual = _sha256_file(wheel)
            if actual != sha256:
                raise DashboardFetchError(
                    f"checksum mismatch for {wheel.name}: expected sha256 {sha256}, got {actual}; "
                    "the file was discarded"
                )
            staged = Path(tmp) / "dashboard"
            _extract(wheel, staged)
            (staged / _MARKER).write_text(sha256 + "\n")
            target = cache / f"agentlightning-{AGL_VERSION}"
            if target.exists():  # a stale or foreign copy: replace it
                shutil.rmtree(target)
            os.replace(staged, target)
    logger.info(
        "dashboard: agentlightning %s (sha256 verified) extracted to %s", AGL_VERSION, target
    )
    return target


def prepare_dashboard(**options: Any) -> Path | None:
    """:func:`fetch_dashboard` for the server: on failure, log why and return ``None`` (the store
    starts without the dashboard)."""
    try:
        return fetch_dashboard(**options)
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
            _MARKER,
        )
        return None


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive lock so concurrent servers, tests and CI set-up do not fetch at once."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download(dest: Path, pip_options: Sequence[str]) -> Path:
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
        "-q",
        *pip_options,
        "-d",
        str(dest),
        AGL_REQUIREMENT,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    except subprocess.TimeoutExpired:
        raise DashboardFetchError(f"pip download {AGL_REQUIREMENT} took over 300 s") from None
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()
        if "No module named pip" in out:
            raise DashboardFetchError(f"pip is not installed in {sys.executable}")
        tail = "\n".join(out.splitlines()[-6:])
        raise DashboardFetchError(
            f"pip download {AGL_REQUIREMENT} failed (exit {proc.returncode}):\n{tail}"
        )
    wheels = sorted(dest.glob("agentlightning-*.whl"))
    if len(wheels) != 1:
        raise DashboardFetchError(f"pip download {AGL_REQUIREMENT} left {len(wheels)} wheels")
    return wheels[0]


def _extract(wheel: Path, dest: Path) -> None:
    """Copy ``agentlightning/dashboard/**`` out of the wheel (paths checked: no escapes)."""
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise DashboardFetchError(f"{wheel.name} is not a valid wheel") from exc
    count = 0
    with zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(_MEMBER_PREFIX):
                continue
            rel = PurePosixPath(info.filename[len(_MEMBER_PREFIX) :])
            if rel.is_absolute() or ".." in rel.parts:
                raise DashboardFetchError(f"{wheel.name}: unsafe member {info.filename!r}")
            out = dest.joinpath(*rel.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            count += 1
    if count == 0 or not (dest / "index.html").is_file():
        raise DashboardFetchError(f"{wheel.name} has no {_MEMBER_PREFIX}index.html")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- serving


def session_value(token: str) -> str:
    """The cookie value for a signed-in browser: an HMAC of the token (not the token)."""
    return hmac.new(token.encode(), b"lightspan-dashboard-session", hashlib.sha256).hexdigest()


def _is_api_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/") or path == "/metrics"


def _cookie(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == SESSION_COOKIE:
                    return val
    return None


def _same_origin(scope: Scope) -> bool:
    """No ``Origin`` header (a same-origin GET) or one naming this server's own host."""
    origin = host = None
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    if origin is None:
        return True
    return host is not None and origin.partition("://")[2] == host


def has_session(scope: Scope, token: str) -> bool:
    value = _cookie(scope)
    return value is not None and hmac.compare_digest(value.encode(), session_value(token).encode())


class DashboardAuthMiddleware:
    """The bearer-token check with the dashboard's exemptions (see the module doc).

    Public: GET/HEAD of non-API paths (the static app) and the sign-in form's POST. Read-only
    API access (GET/HEAD) with a valid session cookie from the store's own origin. Everything
    else goes through :class:`BearerAuthMiddleware` unchanged.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self.bearer = BearerAuthMiddleware(app, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            public = (method in _READ_METHODS and not _is_api_path(path)) or (
                method == "POST" and path == LOGIN_PATH
            )
            reader = (
                method in _READ_METHODS
                and path.startswith("/v1/agl/")
                and has_session(scope, self.token)
                and _same_origin(scope)
            )
            if public or reader:
                await self.app(scope, receive, send)
                return
        await self.bearer(scope, receive, send)


class _ImmutableStaticFiles(StaticFiles):
    """The app's assets have content hashes in their names: cache them for good."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        resp = super().file_response(*args, **kwargs)
        resp.headers.setdefault("Cache-Control", "public, max-age=31536000, immutable")
        return resp


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - lightspan store</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input{{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box;margin:.5rem 0}}
button{{font-size:1rem;padding:.4rem 1rem}}.err{{color:#b00}}</style></head>
<body><h1>lightspan store</h1>
<p>This store requires a token. Enter it to open the dashboard (read-only; the browser keeps
a session cookie, not the token).</p>{error}
<form method="post" action="{action}"><input type="hidden" name="next" value="{next}">
<label>Token <input type="password" name="token" autofocus autocomplete="current-password">
</label><button type="submit">Sign in</button></form></body></html>
"""


def _safe_next(value: str | None) -> str:
    """A local path to return to after signing in (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _login_page(next_path: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    err = f'<p class="err">{html.escape(error)}</p>' if error else ""
    body = _LOGIN_PAGE.format(
        error=err, action=LOGIN_PATH, next=html.escape(_safe_next(next_path), quote=True)
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _signed_in(request: Request, target: str, token: str) -> Response:
    resp = RedirectResponse(_safe_next(target), status_code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        session_value(token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return resp


def dashboard_routes(directory: Path, token: str | None = None) -> list[BaseRoute]:
    """Routes serving the dashboard in ``directory``; they go *after* the API routes.

    With ``token``, a page opened without a session answers the sign-in form instead of the
    app; ``?token=...`` on a page URL signs in too (for scripts; a form keeps it out of the
    browser history).
    """
    index = directory / "index.html"

    async def page(request: Request) -> Response:
        path = request.url.path
        if token is not None and not has_session(request.scope, token):
            given = request.query_params.get("token")
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            here = path + (f"?{urlencode(rest)}" if rest else "")
            if given is not None:
                if hmac.compare_digest(given.encode(), token.encode()):
                    return _signed_in(request, here, token)
                return _login_page(here, "That token is not the store's token.", 401)
            return _login_page(here)
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    async def login(request: Request) -> Response:
        body = await request.body()
        if len(body) > 16_384:
            return _login_page("/", "Request too large.", 413)
        form = parse_qs(body.decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        target = (form.get("next") or ["/"])[0]
        if token is None:
            return RedirectResponse(_safe_next(target), status_code=303)
        if hmac.compare_digest(given.strip().encode(), token.encode()):
            return _signed_in(request, target, token)
        return _login_page(target, "That token is not the store's token.", 401)

    routes: list[BaseRoute] = [Route(LOGIN_PATH, login, methods=["POST"])]
    if (directory / "assets").is_dir():
        routes.append(Mount("/assets", app=_ImmutableStaticFiles(directory=directory / "assets")))
    routes.append(_PageRoute("/{path:path}", page))
    return routes


class _PageRoute(Route):
    """Every non-API path is a page of the app; API paths never match, so the API's own
    routing (404 for an unknown path, 405 for a wrong method) is unchanged."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("type") == "http" and _is_api_path(scope.get("path", "")):
            return Match.NONE, {}
        return super().matches(scope)


def main(argv: list[str] | None = None) -> int:
    """``python -m lightspan.store.dashboard fetch``: fetch into the cache (CI set-up)."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["fetch"]:
        print("usage: python -m lightspan.store.dashboard fetch", file=sys.stderr)
        return 2
    try:
        print(fetch_dashboard())
    except DashboardFetchError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
