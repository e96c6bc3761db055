"""LocalModelProcess without a model: command line, parent-side fetch, start failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightspan.localllm import fetcher, process
from lightspan.localllm.process import LocalModelProcess
from lightspan.localllm.server import ServerStartError


def test_command_runs_the_module_serve_with_parent_watch() -> None:
    cmd = LocalModelProcess("qwen2.5-coder-0.5b", threads=1, parallel=2).command()
    assert cmd[:4] == [sys.executable, "-m", "lightspan.localllm", "serve"]
    assert cmd[cmd.index("--model") + 1] == "qwen2.5-coder-0.5b"
    assert cmd[cmd.index("--port") + 1] == "0"
    assert "--exit-with-parent" in cmd and "--no-fetch" in cmd
    assert cmd[cmd.index("--threads") + 1] == "1" and cmd[cmd.index("--parallel") + 1] == "2"


def test_a_missing_model_is_fetched_in_the_parent_when_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetched: list[str] = []
    monkeypatch.setattr(process, "is_fetched", lambda name: False)
    monkeypatch.setattr(fetcher, "fetch_model", lambda name: fetched.append(name))
    LocalModelProcess("smollm2-135m", fetch_missing=False)._fetch_here()
    assert fetched == []
    LocalModelProcess("smollm2-135m", fetch_missing=True)._fetch_here()
    assert fetched == ["smollm2-135m"]


def test_a_child_that_exits_early_is_reported_with_its_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LIGHTSPAN_MODEL_DIR", str(tmp_path))
    log = tmp_path / "serve.log"
    with pytest.raises(ServerStartError) as info:
        LocalModelProcess("smollm2-135m", log_path=log, ready_timeout=60).start()
    msg = str(info.value)
    assert "it exited with code 1" in msg and f"log {log}" in msg
    assert "error: model 'smollm2-135m' is not fetched" in msg
