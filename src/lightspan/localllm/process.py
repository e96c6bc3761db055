"""The model server as a child process: ``python -m lightspan.localllm serve``.

Why a child process: tests and benchmarks want the model isolated from the process under
test (its threads, its memory, its stderr log) and stopped cleanly at the end. The child
prints one JSON line on stdout once it answers requests, ``{"event": "ready", "base_url":
..., "model": ...}``, so the parent learns the real port even when the child picked it
(``--port 0``), and the child exits when it gets SIGTERM/SIGINT or when its parent dies
(``--exit-with-parent``), so a killed test run leaves no server behind.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Self

from lightspan.localllm.models import REGISTRY, is_fetched
from lightspan.localllm.server import LocalModelServer, ServerStartError

READY_EVENT = "ready"


def serve_forever(server: LocalModelServer, *, exit_with_parent: bool = False) -> int:
    """Start ``server``, announce it on stdout, and serve until a signal (or parent death)."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    parent = os.getppid()
    server.start()
    try:
        ready = {
            "event": READY_EVENT,
            "base_url": server.base_url,
            "model": server.model,
            "pid": os.getpid(),
        }
        print(json.dumps(ready), flush=True)
        print(
            f"serving {server.model} at {server.base_url}; Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(1.0):
            if exit_with_parent and os.getppid() != parent:
                break
    finally:
        server.stop()
    return 0


class LocalModelProcess:
    """Starts ``python -m lightspan.localllm serve`` and stops it; a context manager.

    After :meth:`start`, :attr:`base_url` and :attr:`model` are known. The child's log
    (llama.cpp's stderr, verbose) goes to ``log_path`` when given, else to a temporary
    file; the error raised when it fails to start quotes its tail.
    """

    def __init__(
        self,
        model: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int | None = None,
        parallel: int | None = None,
        fetch_missing: bool = False,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 120.0,
        python: str = sys.executable,
        repeatable: bool = False,
    ) -> None:
        self.model = model
        self.repeatable = repeatable
        self.host = host
        self.port = port
        self.threads = threads
        self.parallel = parallel
        self.fetch_missing = fetch_missing
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.python = python
        self.base_url: str = ""
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def _fetch_here(self) -> None:
        """Fetch a missing registry model here, before spawning the child.

        Here its progress is visible (the child's stderr goes to a log), and the download
        does not count against ``ready_timeout``.
        """
        if self.fetch_missing and self.model in REGISTRY and not is_fetched(self.model):
            from lightspan.localllm.fetcher import fetch_model

            fetch_model(self.model)

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "lightspan.localllm", "serve", "--model", self.model]
        cmd += ["--host", self.host, "--port", str(self.port), "--exit-with-parent"]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        if self.parallel:
            cmd += ["--parallel", str(self.parallel)]
        if self.repeatable:
            cmd.append("--repeatable")
        if not self.fetch_missing:
            cmd.append("--no-fetch")
        if self.log_path is not None:
            cmd.append("--verbose")
        return cmd + self.extra_args

    def start(self) -> Self:
        """Spawn the child and wait for its ready line; raise with its log if it fails."""
        self._fetch_here()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "w+")  # closed in stop()
        else:
            self._log = tempfile.TemporaryFile("w+")  # closed in stop()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        try:
            ready = self._read_ready()
        except BaseException:
            self.stop()
            raise
        self.base_url = ready["base_url"]
        self.model = ready["model"]
        return self

    def _read_ready(self) -> dict[str, str]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + self.ready_timeout
        seen: list[str] = []
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not sel.select(timeout=min(left, 0.5)):
                    if self.proc.poll() is not None:
                        break
                    continue
                line = self.proc.stdout.readline()
                if not line:  # EOF: the child exited
                    break
                seen.append(line.rstrip())
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict) and msg.get("event") == READY_EVENT:
                    return msg
        try:  # stdout closed: the child is exiting; let it finish so its code is known
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.returncode is None:
            why = f"no ready line within {self.ready_timeout:.0f}s"
        else:
            why = f"it exited with code {self.proc.returncode}"
        raise ServerStartError(
            f"model server `{' '.join(self.command())}` did not start: {why}\n"
            f"{self._output_tail(seen)}"
        )

    def _output_tail(self, stdout_lines: list[str]) -> str:
        assert self._log is not None
        self._log.flush()
        self._log.seek(0)
        lines = stdout_lines + self._log.read().splitlines()
        where = f"log {self.log_path}" if self.log_path is not None else "stderr"
        return f"last lines of its {where}:\n" + "\n".join(lines[-15:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in ``timeout`` seconds; its exit code."""
        proc, self.proc = self.proc, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            code = proc.returncode
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
