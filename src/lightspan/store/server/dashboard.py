"""Agent Lightning's own web dashboard, served by ``lightspan store serve --dashboard``.

Why Agent Lightning's and not our own: its 0.3.0 wheel (MIT) ships a built single-page app
(Rollouts, Traces, Resources, Runners, Settings) that speaks only the store's REST API, which
this store implements route for route. :mod:`.dashboard_fetch` fetches it (never vendored);
this module serves it. The app loads its JSON viewer (Monaco) from a public CDN: when Monaco
was fetched too, the app's script is served with that one URL pointing at the store's copy
(``/_lightspan/monaco/vs``), so the viewers work without internet access.

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

import hashlib
import hmac
import html
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from lightspan.store.server.auth import BearerAuthMiddleware
from lightspan.store.server.dashboard_fetch import MONACO_CDN, DashboardFiles

__all__ = [
    "LOGIN_PATH",
    "MONACO_PATH",
    "SESSION_COOKIE",
    "DashboardAuthMiddleware",
    "dashboard_routes",
    "session_value",
]

MONACO_PATH = "/_lightspan/monaco/vs"
SESSION_COOKIE = "lightspan_dashboard"
LOGIN_PATH = "/_lightspan/login"
_READ_METHODS = frozenset({"GET", "HEAD"})


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


def dashboard_routes(files: DashboardFiles, token: str | None = None) -> list[BaseRoute]:
    """Routes serving the dashboard's ``files``; they go *after* the API routes.

    With ``token``, a page opened without a session answers the sign-in form instead of the
    app; ``?token=...`` on a page URL signs in too (for scripts; a form keeps it out of the
    browser history).
    """
    directory = files.app
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
    if files.monaco_vs is not None:
        routes += _monaco_routes(directory / "assets", files.monaco_vs)
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


def _monaco_routes(assets: Path, monaco_vs: Path) -> list[BaseRoute]:
    """Monaco's files under :data:`MONACO_PATH`, and the app's scripts that name the CDN served
    with that URL replaced (the cached files stay as fetched)."""
    routes: list[BaseRoute] = []
    old, new = MONACO_CDN.encode(), MONACO_PATH.encode()
    for script in sorted(assets.glob("*.js")):
        body = script.read_bytes()
        if old not in body:
            continue
        patched = body.replace(old, new)

        async def serve(_request: Request, patched: bytes = patched) -> Response:
            # not "immutable": the same name holds the unpatched script when Monaco is absent
            return Response(
                patched, media_type="text/javascript", headers={"Cache-Control": "no-cache"}
            )

        routes.append(Route(f"/assets/{script.name}", serve))
    routes.append(Mount(MONACO_PATH, app=_ImmutableStaticFiles(directory=monaco_vs)))
    return routes
