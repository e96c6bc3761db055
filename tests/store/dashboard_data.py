"""A store worth looking at: runner rollouts, production rollouts and resources.

Used by the dashboard's browser tests (tests/store/test_dashboard.py) and for the screenshots
in docs/ (``python -m tests.store.dashboard_data --screenshots docs/images``; without
``--screenshots`` it keeps serving, for a look by hand). Everything goes through the real paths: a
:class:`WorkflowRunner` serving rollouts enqueued on the store server (fake LLM), the engine's
tracing pipeline exporting production runs over OTLP/HTTP (the store auto-registers their
rollouts), and resources published by the runner's :func:`publish`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lightspan.engine import PromptTemplate
from lightspan.exporter import exporter_from_config
from lightspan.runner import WorkflowRunner, publish
from lightspan.store.api.client import LightningStoreClient
from tests.exporter.helpers import config, fork_join_workflow, start_pipeline
from tests.fixtures.fake_llm import fake_llm_server
from tests.runner.workflows import qa_workflow
from tests.store.browser import Browser, Page

WORKER_PREFIX = "dash-runner"
REWARD_SPAN = "agentlightning.annotation"


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


def open_reward(page: Page, rollout_id: str) -> str:
    """From the Rollouts page: the rollout's traces drawer, then its reward span's details
    (where the dashboard shows a reward); returns the page text, spaces normalised."""
    page.wait_text(rollout_id)
    page.click_button("View traces", rollout_id)
    page.wait_text(REWARD_SPAN)
    page.click_button("Show span detail", REWARD_SPAN)
    page.wait_text("agentlightning.reward.0.value")
    return page.text().replace("\xa0", " ")


def _shrink(png: Path) -> None:
    """A 128-colour palette (a quarter of the size; the pages are flat UI colours)."""
    try:
        from PIL import Image
    except ImportError:  # Pillow is optional here: keep the full-colour file
        return
    with Image.open(png) as im:
        small = im.convert("RGB").quantize(
            colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    small.save(png, optimize=True)


def take_screenshots(base: str, seeded: Seeded, folder: Path) -> None:
    """The PNGs in docs/ (``python -m tests.store.dashboard_data --screenshots docs/images``)."""
    rid = seeded.runner_rollouts[0]
    with Browser(width=1200, height=560) as browser:
        shots = {
            "dashboard-rollouts.png": (f"{base}/rollouts", rid),
            "dashboard-traces.png": (f"{base}/traces?rolloutId={rid}", REWARD_SPAN),
            "dashboard-runners.png": (f"{base}/runners", seeded.workers[0]),
        }
        for name, (url, needle) in shots.items():
            page = browser.open(url)
            page.wait_text(needle)
            time.sleep(0.5)  # let the last paint settle
            page.screenshot(folder / name)
            _shrink(folder / name)
            print(folder / name)
        page = browser.open(f"{base}/rollouts")
        open_reward(page, rid)
        time.sleep(0.5)
        page.screenshot(folder / "dashboard-span.png")
        _shrink(folder / "dashboard-span.png")
        print(folder / "dashboard-span.png")


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
        args.screenshots.mkdir(parents=True, exist_ok=True)
        take_screenshots(base, seeded, args.screenshots)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
