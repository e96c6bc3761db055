"""Start real store servers (``python -m lightspan.store.server.cli serve``) on free loopback ports.

Why subprocesses and not an in-process app: the tests exercise what users run (the CLI, uvicorn,
grpcio, signals), and the durability test must be able to SIGKILL the server.
"""

from __future__ import annotations

import atexit
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.fixtures.ports import free_port

REPO = Path(__file__).resolve().parents[2]


class _AddressInUse(Exception):
    """The server exited because one of its ports was taken before it could bind it; the
    message is what that start wrote to the log."""


class StoreProcess:
    """One ``lightspan store serve`` process; ``address`` is its REST root."""

    def __init__(
        self,
        backend: str = "memory",
        db: str | None = None,
        *,
        token: str | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        """``tls``: (certificate, key, CA certificate) PEM paths: serve over TLS, and check it
        with a client that verifies the certificate against the CA."""
        self.backend = backend
        self.db = db
        self.token = token
        self.extra_args = extra_args
        self.env = env or {}
        self.tls = tls
        self.port = free_port()
        self.grpc_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        fd, name = tempfile.mkstemp(prefix="lightspan-store-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        # kept for the whole session (failures quote it), removed when pytest exits
        atexit.register(self.log_path.unlink, missing_ok=True)

    @property
    def address(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self, since: int = 0) -> str:
        """The server's log (from byte ``since``: what one start wrote)."""
        with self.log_path.open("rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def start(self, timeout: float = 30.0, *, port_attempts: int = 3) -> StoreProcess:
        """Start the server and wait until it answers its health check.

        A free port can be taken between :func:`free_port` and the server's bind: by an
        outgoing connection before ports were drawn outside the ephemeral range (CI failed once
        so), now only by another process starting to listen: when the server exits because it
        cannot listen on its ports, it is started again on new ones, up to ``port_attempts``
        times."""
        for _ in range(port_attempts - 1):
            try:
                return self._start(timeout)
            except _AddressInUse:
                self.port, self.grpc_port = free_port(), free_port()
        try:
            return self._start(timeout)
        except _AddressInUse as e:
            raise RuntimeError(
                f"store server found its ports taken {port_attempts} times:\n{str(e)[-3000:]}"
            ) from None

    def _start(self, timeout: float) -> StoreProcess:
        logged = self.log_path.stat().st_size
        args = [
            sys.executable,
            "-m",
            "lightspan.store.server.cli",
            "serve",
            "--backend",
            self.backend,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
            "--graceful-timeout",
            "5",
            *self.extra_args,
        ]
        if self.db:
            args += ["--db", self.db]
        if self.token:
            args += ["--token", self.token]
        if self.tls:
            args += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                # The server's words for a port it could not bind (HTTP or gRPC).
                if "cannot listen for" in (written := self.log(logged)):
                    raise _AddressInUse(written)
                raise RuntimeError(
                    f"store server exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                verify = ssl.create_default_context(cafile=self.tls[2]) if self.tls else True
                health = httpx.get(self.address + "/v1/agl/health", timeout=1, verify=verify)
                if health.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"store server not healthy after {timeout}s:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (graceful shutdown); returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
