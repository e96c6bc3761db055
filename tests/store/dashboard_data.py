"""A store worth looking at: runner rollouts, production rollouts and resources.

Used by the dashboard's browser tests and by ``benchmarks/../docs`` screenshots
(``python -m tests.store.dashboard_data``). Everything goes through the real paths: a
:class:`WorkflowRunner` serving rollouts enqueued on the store server (fake LLM), the engine's
tracing pipeline exporting production runs over OTLP/HTTP (the store auto-registers their
rollouts), and resources published by the runner's :func:`publish`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

from lightspan.engine import PromptTemplate
from lightspan.exporter import exporter_from_config
from lightspan.runner import WorkflowRunner, publish
from lightspan.store.client import LightningStoreClient
from tests.exporter.helpers import config, fork_join_workflow, start_pipeline
from tests.fixtures.fake_llm import FakeLLM, _handler
from tests.runner.workflows import qa_workflow

WORKER_PREFIX = "dash-runner"


@dataclass
class Seeded:
    """What :func:`populate` put in the store (what a page should show)."""

    runner_rollouts: list[str] = field(default_factory=list)
    production_rollouts: list[str] = field(default_factory=list)
    resources_id: str = ""
    workers: list[str] = field(default_factory=list)


async def populate(
    address: str, llm_base_url: str, spool: Path, *, token: str | None = None
) -> Seeded:
    """Fill the store at ``address`` (REST and OTLP/HTTP) and return what was added."""
    seeded = Seeded()
    async with LightningStoreClient(address, token=token) as client:
        update = await publish(client, "qa", "v2", {"ask": PromptTemplate("Question: {q}")})
        seeded.resources_id = update.resources_id
        rows = [
            ({"q": "ping"}, "Question: ping"),  # the published prompt: reward 1
            ({"q": "pong"}, "wrong answer"),  # reward 0
            ({"q": "dashboard"}, "Question: dashboard"),
        ]
        for value, expected in rows:
            rollout = await client.enqueue_rollout(
                {"input": value, "expected": expected}, mode="train"
            )
            seeded.runner_rollouts.append(rollout.rollout_id)
        wf = qa_workflow(llm_base_url)
        runner = WorkflowRunner(wf, client, workers=2, worker_id_prefix=WORKER_PREFIX)
        stats = await runner.serve(idle_exit=0.5)
        await wf.aclose()
        assert stats.succeeded == len(rows), stats
        seeded.workers = list(runner.worker_ids)

    # Production: the application runs the workflow with tracing on; no one enqueued these.
    store = {"type": "external", "address": address, **({"token": token} if token else {})}
    cfg = config(store=store, exporter={"protocol": "http/protobuf", "spool": {"path": str(spool)}})
    exporter = exporter_from_config(cfg, environ={})
    pipe = start_pipeline(cfg, exporter)
    try:
        wf = fork_join_workflow(llm_base_url, name="support-bot")
        for q in ("where is my order?", "cancel my plan"):
            result = await wf.run(q)
            assert result.ok and result.rollout_id, result
            seeded.production_rollouts.append(result.rollout_id)
        await wf.aclose()
        pipe.handle.force_flush(30_000)
    finally:
        pipe.shutdown()
    return seeded


@contextlib.contextmanager
def fake_llm_server() -> Iterator[FakeLLM]:
    """The tests' fake LLM (``fake_llm`` fixture) outside pytest."""
    state = FakeLLM(base_url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def chromium() -> str:
    """The Chromium binary (Debian's ``chromium``; .ci/setup.d/50-chromium.sh installs it)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("chromium not found: install Debian's `chromium` package")


def _browser_args(profile: str) -> list[str]:
    return [
        chromium(),
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=8000",
    ]


def dump_dom(url: str, timeout: float = 90.0) -> str:
    """The page's DOM after its scripts ran (headless Chromium, fresh profile)."""
    with tempfile.TemporaryDirectory(prefix="lightspan-chromium-") as profile:
        proc = subprocess.run(
            [*_browser_args(profile), "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed on {url} ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def screenshot(url: str, out: Path, size: str = "1280,720", timeout: float = 90.0) -> None:
    """A PNG of the page as a browser window of ``size`` shows it."""
    with tempfile.TemporaryDirectory(prefix="lightspan-chromium-") as profile:
        proc = subprocess.run(
            [*_browser_args(profile), f"--window-size={size}", f"--screenshot={out}", url],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium screenshot of {url} failed: {proc.stderr[-2000:]}")


def main() -> int:
    """Start a store with the dashboard, fill it, and print its URL (or take screenshots)."""
    from tests.store.servers import StoreProcess

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--screenshots", type=Path, help="write the docs' PNGs into this folder")
    args = parser.parse_args()
    server = StoreProcess("memory", extra_args=("--dashboard",)).start(timeout=120)
    try:
        with fake_llm_server() as llm, tempfile.TemporaryDirectory() as tmp:
            seeded = asyncio.run(populate(server.address, llm.base_url, Path(tmp) / "spool"))
        print(seeded)
        base = server.address
        if args.screenshots is None:
            print(f"dashboard at {base}/ (Ctrl-C stops)")
            server.proc.wait()  # type: ignore[union-attr]
            return 0
        rid = seeded.runner_rollouts[0]
        pages = {
            "dashboard-rollouts.png": f"{base}/rollouts",
            "dashboard-traces.png": f"{base}/traces?rolloutId={rid}",
            "dashboard-resources.png": f"{base}/resources",
            "dashboard-runners.png": f"{base}/runners",
        }
        args.screenshots.mkdir(parents=True, exist_ok=True)
        for name, url in pages.items():
            screenshot(url, args.screenshots / name)
            print(args.screenshots / name)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
