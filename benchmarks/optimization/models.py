"""The local model servers a benchmark run needs, started and stopped by need.

Why by need: the machine has 2 cores shared with others, so servers run with one thread
each and only the models the configurations being evaluated use are up: single-model
configurations run with that one server alone; only configurations that mix models have
two (or three) servers up together.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from lightspan.localllm.process import LocalModelProcess


class ModelPool:
    """``ensure(models)`` makes exactly ``models`` run; ``endpoints`` maps name -> base URL."""

    def __init__(
        self,
        *,
        threads: int = 1,
        parallel: int = 4,
        log_dir: Path | None = None,
        repeatable: bool = False,
    ):
        self.threads = threads
        self.repeatable = repeatable
        self.parallel = parallel
        self.log_dir = log_dir
        self._servers: dict[str, LocalModelProcess] = {}

    @property
    def endpoints(self) -> dict[str, str]:
        return {m: s.base_url for m, s in self._servers.items()}

    def ensure(self, models: Iterable[str]) -> dict[str, str]:
        wanted = set(models)
        for m in sorted(set(self._servers) - wanted):
            self._servers.pop(m).stop()
        for m in sorted(wanted - set(self._servers)):
            log = self.log_dir / f"{m}.log" if self.log_dir else None
            srv = LocalModelProcess(
                m,
                threads=self.threads,
                parallel=self.parallel,
                fetch_missing=True,
                log_path=log,
                repeatable=self.repeatable,
            )
            srv.start()
            self._servers[m] = srv
        return self.endpoints

    def close(self) -> None:
        self.ensure(())

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
