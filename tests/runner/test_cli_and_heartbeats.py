"""``lightspan runner serve`` as a process (drain on SIGTERM, --max-rollouts, --idle-exit) and
heartbeats that keep long attempts alive under the store's health scan."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lightspan.runner import WorkflowRunner
from lightspan.store import RolloutConfig
from lightspan.store.api.client import LightningStoreClient
from tests.runner.workflows import wide_workflow
from tests.store.servers import REPO, StoreProcess

WORKFLOW_YAML = """
workflow: cliwf
steps:
  - task: {name: check, call: "tests.runner.workflows:_maybe_fail"}
evaluator: "tests.runner.workflows:exact"
"""


def _runner_process(tmp_path: Path, store: str, *args: str) -> subprocess.Popen[str]:
    wf = tmp_path / "wf.yaml"
    wf.write_text(WORKFLOW_YAML)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "lightspan", "runner", "serve", str(wf), "--store", store, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def _enqueue(address: str, rows: list[dict]) -> list[str]:
    body = {"rollouts": [{"input": r} for r in rows]}
    resp = httpx.post(f"{address}/v1/agl/queues/rollouts/enqueue", json=body, timeout=10)
    resp.raise_for_status()
    return [r["rollout_id"] for r in resp.json()]


def _rollout(address: str, rid: str) -> dict:
    return httpx.get(f"{address}/v1/agl/rollouts/{rid}", timeout=10).json()


def test_sigterm_drains_in_flight_rollouts_and_dequeues_no_more(
    store_server: StoreProcess, tmp_path: Path
) -> None:
    ids = _enqueue(store_server.address, [{"input": {"sleep": 1.5}}] * 5)
    proc = _runner_process(tmp_path, store_server.address, "--workers", "2")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = [_rollout(store_server.address, r)["status"] for r in ids]
        if states.count("queuing") == 3:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError(f"runner never started two rollouts: {proc.communicate()[1][-2000:]}")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["rollouts"] == 2 and stats["succeeded"] == 2, stats
    states = [_rollout(store_server.address, r)["status"] for r in ids]
    assert sorted(states) == ["queuing"] * 3 + ["succeeded"] * 2


def test_max_rollouts_and_idle_exit(store_server: StoreProcess, tmp_path: Path) -> None:
    _enqueue(store_server.address, [{"input": {"n": i}, "expected": {"n": i}} for i in range(4)])
    proc = _runner_process(tmp_path, store_server.address, "--max-rollouts", "3")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["succeeded"] == 3
    t0 = time.monotonic()
    proc = _runner_process(tmp_path, store_server.address, "--idle-exit", "1", "--workers", "3")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["succeeded"] == 1  # the one left
    assert time.monotonic() - t0 < 20


async def test_heartbeats_keep_a_long_attempt_alive(
    store_server: StoreProcess, client: LightningStoreClient
) -> None:
    """unresponsive_seconds=1 and a 3 s run: heartbeats every 1/3 s keep it running; the same
    rollout without heartbeats (runner stopped hard) would be marked unresponsive."""
    wf = wide_workflow(width=1)
    r = await client.enqueue_rollout(
        {"input": {"sleep": 3}}, config=RolloutConfig(unresponsive_seconds=1.0)
    )
    runner = WorkflowRunner(wf, client, workers=1, poll_interval=0.05, heartbeat_interval=0.5)
    seen: set[str] = set()

    async def watch() -> None:
        while True:
            latest = await client.get_latest_attempt(r.rollout_id)
            if latest is not None:
                seen.add(latest.status)
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    stats = await runner.serve(max_rollouts=1)
    watcher.cancel()
    assert stats.succeeded == 1
    assert "unresponsive" not in seen and "preparing" in seen, seen
    attempts = (await client.query_attempts(r.rollout_id)).items
    assert [a.status for a in attempts] == ["succeeded"]
    rollout = await client.get_rollout_by_id(r.rollout_id)
    assert rollout is not None and rollout.status == "succeeded"
    worker = await client.get_worker_by_id(runner.worker_ids[0])
    assert worker is not None and worker.last_heartbeat_time is not None
