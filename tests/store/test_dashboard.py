"""``lightspan store serve --dashboard`` and ``--cors-origin``: real servers, a real browser.

The dashboard is Agent Lightning 0.3.0's, fetched once into the cache (the CI set-up script
.ci/setup.d/50-dashboard.sh fetches it and installs Debian's ``chromium``). The browser tests
drive headless Chromium over the DevTools protocol (tests/store/browser.py) and assert on the
text the app rendered from this store's REST API.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lightspan.store.server.dashboard import LOGIN_PATH, MONACO_PATH, SESSION_COOKIE
from lightspan.store.server.dashboard_fetch import (
    MONACO_CDN,
    DashboardFetchError,
    fetch_dashboard,
    fetch_monaco,
)
from tests.fixtures.ports import free_port
from tests.store.browser import Browser
from tests.store.dashboard_data import (
    REWARD_SPAN,
    Seeded,
    fake_llm_server,
    open_reward,
    populate,
)
from tests.store.servers import StoreProcess

TOKEN = "dashboard-s3cret-token"


@pytest.fixture(scope="module")
def cached() -> None:
    """The pinned packages in the default cache (a no-op when set-up already fetched them)."""
    fetch_dashboard()
    fetch_monaco()


def _seeded_server(tmp: Path, token: str | None = None) -> tuple[StoreProcess, Seeded]:
    server = StoreProcess("memory", token=token, extra_args=("--dashboard",)).start(timeout=120)
    try:
        with fake_llm_server() as llm:
            seeded = asyncio.run(populate(server.address, llm.base_url, tmp / "spool", token=token))
    except BaseException:
        server.stop()
        raise
    return server, seeded


@pytest.fixture(scope="module")
def open_store(
    cached: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[StoreProcess, Seeded]]:
    server, seeded = _seeded_server(tmp_path_factory.mktemp("open"))
    yield server, seeded
    server.stop()


@pytest.fixture(scope="module")
def token_store(
    cached: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[StoreProcess, Seeded]]:
    server, seeded = _seeded_server(tmp_path_factory.mktemp("token"), token=TOKEN)
    yield server, seeded
    server.stop()
    assert TOKEN not in server.log()


# --------------------------------------------------------------------------- fetch


def test_a_wheel_with_another_checksum_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    with pytest.raises(DashboardFetchError, match="checksum mismatch .* expected sha256 0000"):
        fetch_dashboard(cache_dir=tmp_path, sha256="0" * 64)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_the_app_is_extracted_once_then_served_from_the_cache(tmp_path: Path) -> None:
    app = fetch_dashboard(cache_dir=tmp_path)
    assert (app / "index.html").read_text().count("Agent-lightning Dashboard") == 1
    assert sorted(p.suffix for p in (app / "assets").iterdir()) == [".css", ".js", ".svg"]
    # Cached: no download even when the index is unreachable.
    dead = f"http://127.0.0.1:{free_port()}/simple"
    assert fetch_dashboard(cache_dir=tmp_path, pip_options=["--index-url", dead]) == app


def test_without_the_registry_the_store_starts_without_the_dashboard(tmp_path: Path) -> None:
    env = {
        "LIGHTSPAN_DASHBOARD_DIR": str(tmp_path / "empty-cache"),
        "PIP_INDEX_URL": f"http://127.0.0.1:{free_port()}/simple",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
    }
    server = StoreProcess("memory", env=env, extra_args=("--dashboard",)).start(timeout=120)
    try:
        assert httpx.get(server.address + "/v1/agl/rollouts").json()["items"] == []
        assert httpx.get(server.address + "/").status_code == 404
        log = server.log()
        assert "dashboard unavailable, serving the store without it" in log
        assert "pip download agentlightning==0.3.0 failed" in log
    finally:
        server.stop()


# --------------------------------------------------------------------------- routes


def test_pages_assets_and_the_api_share_the_port(open_store: tuple[StoreProcess, Seeded]) -> None:
    server, seeded = open_store
    base = server.address
    index = httpx.get(base + "/")
    assert index.status_code == 200 and "<title>Agent-lightning Dashboard</title>" in index.text
    for route in ("/rollouts", "/traces?rolloutId=x", "/runners", "/resources", "/settings"):
        r = httpx.get(base + route)
        assert r.status_code == 200 and r.text == index.text, route
    script = index.text.split('src="')[1].split('"')[0]
    js = httpx.get(base + script)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert MONACO_PATH in js.text and MONACO_CDN not in js.text  # the viewer works offline
    assert httpx.get(f"{base}{MONACO_PATH}/loader.js").status_code == 200
    css = index.text.split('stylesheet" crossorigin href="')[1].split('"')[0]
    assert "immutable" in httpx.get(base + css).headers["cache-control"]
    # The API is untouched: unknown paths 404, a wrong method 405, data as JSON.
    assert httpx.get(base + "/v1/agl/no-such-route").status_code == 404
    assert httpx.get(base + "/v1/nothing").status_code == 404
    assert httpx.get(base + "/v1/traces").status_code == 405
    assert httpx.post(base + "/rollouts").status_code == 405
    ids = {r["rollout_id"] for r in httpx.get(base + "/v1/agl/rollouts").json()["items"]}
    assert set(seeded.runner_rollouts + seeded.production_rollouts) <= ids


# --------------------------------------------------------------------------- browser


def test_browser_renders_rollouts_traces_resources_runners_and_a_reward(
    open_store: tuple[StoreProcess, Seeded],
) -> None:
    server, seeded = open_store
    base = server.address
    with Browser() as browser:
        rollouts = browser.open(base + "/rollouts")
        text = rollouts.wait_text(*seeded.runner_rollouts, *seeded.production_rollouts)
        assert "where is my order?" in text  # a production rollout's input (its root span)
        assert text.count("SUCCEEDED") == 5

        runner_rid, prod_rid = seeded.runner_rollouts[0], seeded.production_rollouts[0]
        traces = browser.open(f"{base}/traces?rolloutId={runner_rid}")
        traces.wait_text(
            runner_rid, "invoke_workflow qa", "llm answer", "openai.chat.completion", REWARD_SPAN
        )
        prod = browser.open(f"{base}/traces?rolloutId={prod_rid}")
        prod.wait_text(prod_rid, "invoke_workflow support-bot", "fork f", "llm a", "llm b")

        resources = browser.open(base + "/resources")
        resources.wait_text(seeded.resources_id)

        runners = browser.open(base + "/runners")
        runners.wait_text(*seeded.workers)

        # Rewards: "ping" answered what was expected (1), "pong" did not (0).
        for rid, reward in ((seeded.runner_rollouts[0], 1), (seeded.runner_rollouts[1], 0)):
            page = browser.open(base + "/rollouts")
            detail = open_reward(page, rid)
            assert f'"agentlightning.reward.0.value": {reward}' in detail, detail[-1500:]
            assert f'"rolloutId": "{rid}"' in detail


def test_browser_signs_in_with_the_token_and_reads(
    token_store: tuple[StoreProcess, Seeded],
) -> None:
    server, seeded = token_store
    rid = seeded.runner_rollouts[0]
    with Browser() as browser:
        page = browser.open(server.address + "/rollouts")
        page.wait_text("This store requires a token")
        page.eval(
            "document.querySelector('input[name=token]').value = 'wrong';"
            "document.querySelector('form').submit()"
        )
        page.wait_text("That token is not the store's token.")
        page.eval(
            f"document.querySelector('input[name=token]').value = {TOKEN!r};"
            "document.querySelector('form').submit()"
        )
        page.wait_text(rid, *seeded.production_rollouts)
        assert page.url().endswith("/rollouts")
        runners = browser.open(server.address + "/runners")  # the session cookie is kept
        runners.wait_text(*seeded.workers)
    with Browser() as browser:  # a fresh profile: ?token= signs in too (for scripts)
        page = browser.open(f"{server.address}/traces?rolloutId={rid}&token={TOKEN}")
        page.wait_text(rid, REWARD_SPAN)
        assert "token=" not in page.url() and f"rolloutId={rid}" in page.url()


# --------------------------------------------------------------------------- token rules


def test_the_session_cookie_is_read_only_and_same_origin(
    token_store: tuple[StoreProcess, Seeded],
) -> None:
    server, _ = token_store
    base = server.address
    api = base + "/v1/agl/rollouts"
    # Public: the app's static files (they hold no data); the API is not.
    assert "requires a token" in httpx.get(base + "/rollouts").text
    assert httpx.get(base + "/assets/favicon-DgAMfu7-.svg").status_code == 200
    assert httpx.get(api).status_code == 401
    wrong = httpx.post(base + LOGIN_PATH, data={"token": "nope", "next": "/"})
    assert wrong.status_code == 401 and SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
    ok = httpx.post(base + LOGIN_PATH, data={"token": TOKEN, "next": "//evil.example/x"})
    assert ok.status_code == 303 and ok.headers["location"] == "/"  # never another site
    cookie = ok.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert TOKEN not in cookie
    session = {SESSION_COOKIE: ok.cookies[SESSION_COOKIE]}
    with httpx.Client(cookies=session) as c:
        assert c.get(api).status_code == 200
        assert c.get(base + "/v1/agl/workers").status_code == 200
        # Read-only: writes, OTLP intake and /metrics still need the bearer header.
        assert (
            c.post(base + "/v1/agl/queues/rollouts/enqueue", json={"input": 1}).status_code == 401
        )
        assert c.post(base + "/v1/traces", content=b"").status_code == 401
        assert c.get(base + "/metrics").status_code == 401
        # Another origin's page cannot use the cookie.
        assert c.get(api, headers={"origin": "http://evil.example"}).status_code == 401
        assert c.get(api, headers={"origin": base}).status_code == 200
    with httpx.Client(cookies={SESSION_COOKIE: "forged"}) as c:
        assert c.get(api).status_code == 401
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.get(base + "/metrics", headers=bearer).status_code == 200


# --------------------------------------------------------------------------- CORS


def _preflight(base: str, origin: str) -> httpx.Response:
    return httpx.options(
        base + "/v1/agl/rollouts",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type",
        },
    )


def test_no_cors_headers_without_cors_origin(open_store: tuple[StoreProcess, Seeded]) -> None:
    server, _ = open_store
    r = httpx.get(server.address + "/v1/agl/rollouts", headers={"origin": "http://nb.example"})
    assert r.status_code == 200
    assert not [h for h in r.headers if h.startswith("access-control-")]
    assert "access-control-allow-origin" not in _preflight(server.address, "http://a").headers


def test_cors_origins_are_allowed_one_by_one_or_all() -> None:
    allowed, other = "http://localhost:3000", "http://elsewhere.example"
    server = StoreProcess(
        "memory",
        token=TOKEN,
        extra_args=("--cors-origin", allowed, "--cors-origin", "http://second.example"),
    ).start()
    try:
        pre = _preflight(server.address, allowed)  # preflights carry no token
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == allowed
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        assert _preflight(server.address, other).status_code == 400
        bearer = {"authorization": f"Bearer {TOKEN}"}
        r = httpx.get(server.address + "/v1/agl/rollouts", headers={"origin": allowed, **bearer})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == allowed
        # A 401 is readable by the allowed page (it can tell "sign in" from "network error").
        r = httpx.get(server.address + "/v1/agl/rollouts", headers={"origin": allowed})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == allowed
        r = httpx.get(server.address + "/v1/agl/rollouts", headers={"origin": other, **bearer})
        assert "access-control-allow-origin" not in r.headers
    finally:
        server.stop()
    server = StoreProcess("memory", extra_args=("--cors-origin", "*")).start()
    try:
        r = httpx.get(server.address + "/v1/agl/rollouts", headers={"origin": other})
        # "*" with credentials allowed: Starlette answers "*" or echoes the origin (by version)
        assert r.headers["access-control-allow-origin"] in ("*", other)
        assert _preflight(server.address, other).headers["access-control-allow-origin"] == other
    finally:
        server.stop()


# --------------------------------------------------------------------------- the demo


@pytest.mark.llm
def test_the_demo_saves_its_traces_and_says_how_to_browse_them(
    cached: None, llm_server, tmp_path: Path
) -> None:
    db = tmp_path / "demo-traces.db"
    p = subprocess.run(
        [
            *(sys.executable, "-m", "lightspan", "demo", "--endpoint", llm_server.base_url),
            *("--model", llm_server.model, "--questions", "1", "--save-traces", str(db)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"lightspan store serve --dashboard --db {db}" in p.stdout, p.stdout
    rid = re.search(r"traces\?rolloutId=(ro-[0-9a-f]+)", p.stdout)
    assert rid is not None, p.stdout
    server = StoreProcess("sqlite", str(db), extra_args=("--dashboard",)).start(timeout=120)
    try:
        with Browser() as browser:
            page = browser.open(f"{server.address}/traces?rolloutId={rid.group(1)}")
            page.wait_text(
                rid.group(1), "invoke_workflow arithmetic-batch", "openai.chat.completion"
            )
    finally:
        server.stop()
