"""Runs the marked code blocks of a Markdown guide, in order, as a newcomer would.

Why: a guide whose commands rot is worse than none. Each guide marks the blocks that CI runs
with an HTML comment on the line before the fence (invisible on GitHub):

    <!-- doctest: shell -->                 run with bash -euo pipefail; must exit 0
    <!-- doctest: shell, fails -->          must exit non-zero (a documented failure)
    <!-- doctest: shell, background, ready=URL -->
                                            start it (a server), wait until URL answers HTTP,
                                            stop it (SIGTERM) when the guide is done
    <!-- doctest: python -->                run with the venv's python; must exit 0
    <!-- doctest: python, real-model -->    same, against the real local model
    <!-- doctest: file=PATH -->             the block must equal the repository file PATH

Blocks run in one scratch directory holding a copy of ``examples/`` and ``core-config.yaml``,
with ``.venv/bin`` first on ``PATH`` and ``HOME`` inside the scratch directory (so the spool
and caches of a guide are its own). To run on 127.0.0.1 next to other tests, the harness
rewrites a few literal addresses in the blocks and in the copied files (``SUBSTITUTIONS``):
the model at ``127.0.0.1:8080`` becomes the test's model server, the store's ports 4747 and
4317 become free ports. Nothing else is changed: a renamed flag, key or file fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
MARK = re.compile(r"^<!--\s*doctest:\s*(?P<opts>.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")


@dataclass
class Block:
    """A marked block: its options, its text and where it is (for error messages)."""

    doc: str
    line: int
    kind: str
    text: str
    flags: set[str] = field(default_factory=set)
    options: dict[str, str] = field(default_factory=dict)

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def marked_blocks(path: Path) -> list[Block]:
    """The marked blocks of a Markdown file, in order; a marker not followed by a fence fails."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    rel = str(path.relative_to(REPO))
    while i < len(lines):
        m = MARK.match(lines[i])
        if not m:
            i += 1
            continue
        parts = [p.strip() for p in m["opts"].split(",") if p.strip()]
        if i + 1 >= len(lines) or not FENCE.match(lines[i + 1]):
            raise AssertionError(f"{rel}:{i + 1}: a doctest marker must precede a ``` fence")
        end = i + 2
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        text = "\n".join(lines[i + 2 : end]) + "\n"
        flags = {p for p in parts if "=" not in p}
        options = dict(p.split("=", 1) for p in parts if "=" in p)
        kind = "file" if "file" in options else next(iter(flags & {"shell", "python"}), "")
        if not kind:
            raise AssertionError(f"{rel}:{i + 1}: doctest marker without shell/python/file=")
        blocks.append(Block(rel, i + 2, kind, text, flags - {"shell", "python"}, options))
        i = end + 1
    return blocks


@dataclass
class Guide:
    """A scratch directory and the processes one guide started."""

    workdir: Path
    substitutions: dict[str, str]
    env: dict[str, str]
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, tmp: Path, substitutions: dict[str, str], **env: str) -> Guide:
        work = tmp / "work"
        work.mkdir()
        (work / "home").mkdir()
        shutil.copytree(REPO / "examples", work / "examples", ignore=_ignore_caches)
        shutil.copy(REPO / "core-config.yaml", work / "core-config.yaml")
        guide = cls(work, substitutions, _base_env(work, env))
        for f in (work / "examples").rglob("*"):
            if f.suffix in (".yaml", ".yml", ".py", ".jsonl", ".md") and f.is_file():
                f.write_text(guide.substitute(f.read_text()))
        return guide

    def substitute(self, text: str) -> str:
        """Every substitution in one pass (a new port never gets rewritten again)."""
        if not self.substitutions:
            return text
        pattern = "|".join(re.escape(k) for k in sorted(self.substitutions, key=len, reverse=True))
        return re.sub(pattern, lambda m: self.substitutions[m.group(0)], text)

    def run(self, block: Block, timeout: float = 240) -> str:
        """Run one block; returns its output; raises AssertionError with the output on failure."""
        if block.kind == "file":
            path = REPO / block.options["file"]
            assert path.is_file(), f"{block.where()}: {block.options['file']} does not exist"
            assert block.text == path.read_text(), (
                f"{block.where()}: the block differs from {block.options['file']}; "
                "copy the file into the guide again"
            )
            return ""
        text = self.substitute(block.text)
        if block.kind == "python":
            script = self.workdir / f"block_{block.line}.py"
            script.write_text(text)
            argv = [sys.executable, str(script)]
        else:
            argv = ["bash", "-euo", "pipefail", "-c", text]
        if "background" in block.flags:
            return self._start(block, argv)
        p = subprocess.run(
            argv,
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        out = p.stdout + p.stderr
        self.log.append(f"--- {block.where()} (exit {p.returncode})\n{out}")
        failed = p.returncode != 0
        if failed != ("fails" in block.flags):
            raise AssertionError(
                f"{block.where()}: exit code {p.returncode}"
                f" ({'expected a failure' if not failed else 'expected success'})\n"
                f"{text}\n--- output:\n{out}\n{self.background_logs()}"
            )
        return out

    def _start(self, block: Block, argv: list[str]) -> str:
        log = self.workdir / f"bg_{block.line}.log"
        proc = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.background.append(proc)
        url = self.substitute(block.options["ready"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{block.where()}: exited {proc.returncode}:\n{log.read_text()}"
                )
            try:
                httpx.get(url, timeout=1, verify=False)
                return ""
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"{block.where()}: {url} did not answer in 60 s:\n{log.read_text()}")

    def background_logs(self) -> str:
        return "\n".join(
            f"--- {p.name}:\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.workdir.glob("bg_*.log"))
        )

    def stop(self) -> None:
        """SIGTERM every background process group (our own children only), then wait."""
        for proc in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.background:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _ignore_caches(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n in ("__pycache__", ".pytest_cache")]


def _base_env(work: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIGHTSPAN_", "OTEL_")) and k not in ("PYTHONPATH",)
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(work / "home")
    env["COLUMNS"] = "80"
    env.update(extra)
    return env


def run_guide(guide: Guide, blocks: list[Block]) -> str:
    """Run ``blocks`` in order; always stop the background processes. Returns all output."""
    try:
        for block in blocks:
            guide.run(block)
    finally:
        guide.stop()
        (guide.workdir / "guide-output.log").write_text("\n".join(guide.log))
    return "\n".join(guide.log)
