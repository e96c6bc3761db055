"""``python -m lightspan.localllm bench``: how fast a registry model runs on this machine.

Why: the demo's and benchmarks' timings depend on the model tier and the cores available, so
docs/local-model.md quotes figures measured with this command rather than guesses. It
serves the model in-process, sends ``requests`` chat completions (``concurrency`` at a
time) that each generate exactly ``max_tokens`` tokens (``ignore_eos``), and reports
llama.cpp's own prompt and generation speeds next to the end-to-end throughput.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from lightspan.localllm.server import LocalModelServer

PROMPT = (
    "A farmer has 17 sheep. All but 9 run away. He then buys twice as many as he has left. "
    "How many sheep does he have now? Explain step by step."
)


@dataclass(slots=True)
class BenchResult:
    model: str
    threads: int
    concurrency: int
    load_seconds: float
    wall_seconds: float
    prompt_tokens: int
    completion_tokens: int
    prompt_tps: float
    """Median prompt processing speed per request (llama.cpp timings), tokens/s."""
    generation_tps: float
    """Median generation speed per request (llama.cpp timings), tokens/s."""

    @property
    def throughput_tps(self) -> float:
        """Completion tokens per wall-clock second over all requests."""
        return self.completion_tokens / self.wall_seconds if self.wall_seconds else 0.0

    def summary(self) -> str:
        return (
            f"{self.model}: threads={self.threads} concurrency={self.concurrency} "
            f"load {self.load_seconds:.1f}s | prompt {self.prompt_tps:.0f} tok/s | "
            f"generation {self.generation_tps:.1f} tok/s per request | "
            f"throughput {self.throughput_tps:.1f} tok/s "
            f"({self.completion_tokens} tokens in {self.wall_seconds:.1f}s)"
        )


def run_bench(
    model: str,
    *,
    threads: int | None = None,
    requests: int = 4,
    concurrency: int = 1,
    max_tokens: int = 128,
) -> BenchResult:
    """Serve ``model`` and measure it; the model must be fetched (or fetchable)."""
    started = time.monotonic()
    with LocalModelServer(model, threads=threads, parallel=concurrency) as server:
        load = time.monotonic() - started
        body: dict[str, Any] = {
            "model": server.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        with httpx.Client(base_url=server.base_url, timeout=600) as client:
            client.post("/chat/completions", json={**body, "max_tokens": 4}).raise_for_status()

            def one(i: int) -> dict[str, Any]:
                # A distinct prefix per request, so the prompt cache does not skip the prompt.
                msg = [{"role": "user", "content": f"Question {i}. {PROMPT}"}]
                r = client.post("/chat/completions", json={**body, "messages": msg})
                r.raise_for_status()
                return r.json()

            t0 = time.monotonic()
            with ThreadPoolExecutor(concurrency) as pool:
                results = list(pool.map(one, range(requests)))
            wall = time.monotonic() - t0
        return BenchResult(
            model=model,
            threads=server.threads,
            concurrency=concurrency,
            load_seconds=load,
            wall_seconds=wall,
            prompt_tokens=sum(r["usage"]["prompt_tokens"] for r in results),
            completion_tokens=sum(r["usage"]["completion_tokens"] for r in results),
            prompt_tps=statistics.median(r["timings"]["prompt_per_second"] for r in results),
            generation_tps=statistics.median(r["timings"]["predicted_per_second"] for r in results),
        )
