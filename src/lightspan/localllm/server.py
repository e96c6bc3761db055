"""An OpenAI-compatible endpoint for a registry model, served in-process by xllamacpp.

Why in-process: xllamacpp embeds llama.cpp's HTTP server, which answers from its own C++
threads, so a Python program (the demo) can start a real model next to its asyncio loop
without a second process or a compiled binary. The server gets the registry name as its only
model alias, so ``/v1/models`` lists it and responses carry it in ``model``; llama.cpp
serves one model and accepts any ``model`` value in requests. Non-streamed chat completions
always carry ``usage`` (prompt/completion token counts), which cost accounting relies on;
streamed ones do when the request sets ``stream_options={"include_usage": true}``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from lightspan.localllm.models import (
    DEFAULT_MODEL,
    ModelSpec,
    get_spec,
    is_fetched,
    model_path,
)

DEFAULT_PARALLEL = 4
"""Request slots: concurrent requests (fork/join branches) are decoded in one batch."""
DEFAULT_CTX_PER_SLOT = 4096


class ModelNotFetchedError(RuntimeError):
    """The model file is not in the cache and fetching was not allowed."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(
            f"model {name!r} is not fetched ({path} is missing); run "
            f"`python -m lightspan.localllm fetch {name}` (or `lightspan llm fetch {name}`)"
        )


class ServerStartError(RuntimeError):
    """The model server did not come up; the message says why."""


def default_threads() -> int:
    """All usable cores but one (at least one).

    llama.cpp's threads wait for each other at every step by spinning, so when another
    process (the workflow calling the model, tracing, a test suite) competes for the cores,
    a thread per core collapses: on 2 cores, 2 threads fell to ~2 tokens/s where 1 thread
    kept ~20. Leaving one core free costs some speed on an idle machine and avoids that.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


class LocalModelServer:
    """A running llama.cpp server for one model; use as a context manager.

    ``port=0`` picks a free port; after :meth:`start`, :attr:`base_url` (ending in ``/v1``)
    and :attr:`model` are what an OpenAI client needs.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        model_file: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int | None = None,
        parallel: int = DEFAULT_PARALLEL,
        n_ctx: int | None = None,
        fetch_missing: bool = True,
        verbose: bool = False,
        ready_timeout: float = 120.0,
        repeatable: bool = False,
    ) -> None:
        self.spec: ModelSpec | None = None if model_file else get_spec(model)
        self.model = model
        self.model_file = model_file
        self.host = host
        self.requested_port = port
        self.threads = threads or default_threads()
        self.parallel = max(1, parallel)
        self.n_ctx = n_ctx or self._default_ctx()
        self.fetch_missing = fetch_missing
        self.verbose = verbose
        self.ready_timeout = ready_timeout
        self.repeatable = repeatable
        self._server: Any = None
        self._url: str | None = None

    def _default_ctx(self) -> int:
        per_slot = DEFAULT_CTX_PER_SLOT
        if self.spec and self.spec.n_ctx_train:
            per_slot = min(per_slot, self.spec.n_ctx_train)
        return per_slot * self.parallel

    # -- lifecycle -------------------------------------------------------------------------

    def resolve_model_file(self) -> Path:
        """The GGUF file to load, fetched first when allowed and missing."""
        if self.model_file is not None:
            if not self.model_file.is_file():
                raise ServerStartError(f"model file {self.model_file} does not exist")
            return self.model_file
        assert self.spec is not None
        if not is_fetched(self.spec):
            if not self.fetch_missing:
                raise ModelNotFetchedError(self.spec.name, model_path(self.spec))
            from lightspan.localllm.fetcher import fetch_model

            fetch_model(self.spec)
        return model_path(self.spec)

    def start(self) -> Self:
        """Load the model, listen, and wait until the server answers ``/health``."""
        if self._server is not None:
            return self
        try:
            import xllamacpp
        except ImportError as exc:
            raise ServerStartError(
                "xllamacpp is not installed; install lightspan with the local-llm extra "
                "(pip install 'lightspan[local-llm]')"
            ) from exc
        path = self.resolve_model_file()
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.model_alias = {self.model}
        params.hostnames = [self.host]
        params.port = self.requested_port
        params.n_ctx = self.n_ctx
        params.n_parallel = self.parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        if self.repeatable:
            # llama.cpp reuses a slot's cached prompt prefix (and a RAM cache of earlier
            # prompts): the rest of the prompt is then evaluated in a differently sized batch,
            # whose numerics differ, so at temperature 0 a request's answer depends on the
            # requests served before it (benchmarks/optimization/probes/determinism.py: 3 of 4
            # 256-token plans changed between passes of the same prompts, one slot). Without
            # the cache every request is computed from scratch: the same answer in any order,
            # at the price of the cache's savings (determinism.py: 98-100 s per pass instead
            # of 56-61 s, its prompts sharing long prefixes; 33 s instead of 29 s for 4 plans).
            params.cache_prompt = False
            params.cache_ram_mib = 0
        # 3 = llama.cpp's info logs (every request); 1 keeps errors only.
        params.verbosity = 3 if self.verbose else 1
        started = time.monotonic()
        try:
            server = xllamacpp.Server(params)
        except RuntimeError as exc:
            raise ServerStartError(
                f"llama.cpp could not serve {path} on {self.host}:{self.requested_port} "
                f"({exc}); its log above on stderr says why (bad file, port in use, ...)"
            ) from exc
        self._server = server
        self._url = str(server.listening_address).rstrip("/")
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.ready_timeout
        last: str = "no answer"
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                try:
                    r = client.get(f"{self.url}/health")
                    if r.status_code == 200:
                        return
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                time.sleep(0.1)
        raise ServerStartError(
            f"model server at {self.url} not ready after {self.ready_timeout:.0f}s ({last})"
        )

    def stop(self) -> None:
        """Stop serving and free the model (llama.cpp stops when the Server is released)."""
        server, self._server = self._server, None
        del server

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what clients need -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._url is None:
            raise RuntimeError("the model server is not started")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return f"{self.url}/v1"
