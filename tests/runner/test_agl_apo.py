"""Agent Lightning's own APO optimizes a lightspan workflow's prompt through a lightspan store.

Real processes on 127.0.0.1: ``lightspan store serve`` (memory), two-worker ``lightspan runner
serve`` on a YAML workflow whose LLM is the local model (SmolLM2 via the ``llm_server``
fixture), and agentlightning 0.3.0's ``APO`` in its own venv with its critic and editor pointed
at the same local model. APO runs no rollout itself: every rollout must have been run by our
runner (worker ids), have a reward APO read from our spans, and have rendered exactly the
prompt version APO published under the rollout's ``resources_id``. Tiny beam (1 x 1 x 1) so
it stays within a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.runner.agl_helpers import ROOT, run_agl_script
from tests.store.servers import StoreProcess

pytestmark = pytest.mark.interop

SEED = "Answer in one word. {question}"


@pytest.fixture
def store() -> Iterator[StoreProcess]:
    server = StoreProcess("memory").start()
    yield server
    server.stop()


def _workflow_file(tmp: Path, base_url: str, model: str) -> Path:
    path = tmp / "qa.yaml"
    doc = {
        "workflow": "apo-qa",
        "evaluator": "tests.runner.apo_eval:contains_expected",
        "resources": {
            "id": "apo-qa:own",
            "prompts": {"ask": {"template": "OWN {question}", "engine": "f-string"}},
            "llms": {
                "default": {
                    "endpoint": base_url,
                    "model": model,
                    "sampling_parameters": {"max_tokens": 12, "temperature": 0},
                }
            },
        },
        "steps": [{"llm": {"name": "answer", "prompt": "ask"}}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.timeout(420)
def test_agl_apo_drives_lightspan_runners(
    store: StoreProcess, llm_server: object, tmp_path: Path
) -> None:
    base_url, model = llm_server.base_url, llm_server.model  # type: ignore[attr-defined]
    wf = _workflow_file(tmp_path, base_url, model)
    log = tmp_path / "runner.log"
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lightspan",
            "runner",
            "serve",
            str(wf),
            "--store",
            store.address,
            "--workers",
            "2",
            "--worker-id-prefix",
            "ls-apo",
            "--poll-interval",
            "0.1",
            "--resources-ttl",
            "0.5",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        report = run_agl_script("agl_apo.py", store.address, base_url, model, timeout=360)
    finally:
        runner.terminate()
        runner.wait(timeout=60)
    published = report["resources"]
    rollouts = report["rollouts"]
    assert published, report
    assert SEED in published.values()
    assert len(rollouts) >= 5, rollouts
    for r in rollouts:
        # Run by our runner, with a version APO published.
        assert r["workers"] and all(w.startswith("ls-apo-") for w in r["workers"]), r
        assert r["resources_id"] in published, r
        if r["status"] == "succeeded":
            # APO read a reward and messages from our spans.
            assert r["final_reward"] in (0.0, 1.0), r
            assert r["n_messages"] == 1, r
            # The prompt rendered is the published version's, not the workflow's own.
            template = published[r["resources_id"]]
            assert r["prompts"] == [template.format(question=r["input"]["question"])], r
    assert sum(r["status"] == "succeeded" for r in rollouts) >= 3, rollouts
    # APO published the seed and at least one candidate from its editor (a new version, even
    # when the small model's edit returns the same text), and our runners ran both.
    used = {r["resources_id"] for r in rollouts}
    assert len(used) >= 2, (
        "our runners ran only one of APO's prompt versions",
        published,
        log.read_text()[-2000:],
    )
