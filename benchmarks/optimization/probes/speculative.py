"""Does speculative decoding make the strongest local model cheaper without changing its answers?

    .venv/bin/python benchmarks/optimization/probes/speculative.py [--tasks 8] [--modes plain,draft,ngram]

Why: the goal of issue 11 asks for equal quality, and with 0/1 rewards on ten test tasks a
change passes only if it loses no task (docs/performance.md 1c). Speculative decoding is the
one lever that promises the target model's own greedy answers at a lower cost: a draft
proposes tokens, the target verifies several in one batch. This measures it on this machine
for the costliest step of classification x sequence (the 1.5B's ``plan``, up to 256 tokens):
CPU and wall time per generated token, draft tokens accepted, and how many answers are
identical to those of the same server without speculation. Every server has one request slot
and no prompt cache (``--repeatable``), one request at a time, the same prompts in the same
order; tasks from seed 99's train split (never a benchmark test task).

Modes: ``plain`` (no speculation), ``draft`` (Qwen 0.5B drafts up to ``--draft-max`` tokens:
the two Coder models share a tokenizer), ``ngram`` (llama.cpp's prompt-lookup speculation:
drafts copied from n-grams already in the context, no second model).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import httpx
from benchmarks.optimization.tasks import generate
from benchmarks.optimization.workflows import PROMPTS
from rich.console import Console
from rich.table import Table

from lightspan.localllm.models import model_path
from lightspan.localllm.server import LocalModelServer

TARGET = "qwen2.5-coder-1.5b"
DRAFT = "qwen2.5-coder-0.5b"


class SpeculativeServer(LocalModelServer):
    """A repeatable one-slot server whose llama.cpp parameters get a speculation mode."""

    def __init__(self, mode: str, draft_max: int) -> None:
        super().__init__(TARGET, parallel=1, repeatable=True)
        self.mode = mode
        self.draft_max = draft_max

    def start(self) -> SpeculativeServer:
        import xllamacpp

        types = xllamacpp.common_speculative_type
        build = xllamacpp.Server
        mode, draft_max, threads = self.mode, self.draft_max, self.threads

        def with_speculation(params: Any) -> Any:
            spec = params.speculative
            if mode == "draft":
                spec.types = [types.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
                spec.draft.mparams.path = str(model_path(DRAFT))
                spec.draft.n_max = draft_max
                spec.draft.n_min = 0
                spec.draft.cpuparams.n_threads = threads
                spec.draft.cpuparams_batch.n_threads = threads
            elif mode == "ngram":
                spec.types = [types.COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE]
            return build(params)

        xllamacpp.Server = with_speculation
        try:
            super().start()
        finally:
            xllamacpp.Server = build
        return self


@dataclass
class Pass:
    mode: str
    answers: list[str] = field(default_factory=list)
    tokens: int = 0
    drafted: int = 0
    accepted: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0


def _cpu() -> float:
    """This process's CPU seconds: the model server runs in it (xllamacpp, in-process)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_pass(mode: str, prompts: list[str], draft_max: int, console: Console) -> Pass:
    out = Pass(mode)
    with SpeculativeServer(mode, draft_max) as server, httpx.Client(timeout=900) as client:

        def ask(content: str, max_tokens: int) -> dict[str, Any]:
            r = client.post(
                f"{server.base_url}/chat/completions",
                json={
                    "model": TARGET,
                    "messages": [{"role": "user", "content": content}],
                    "max_tokens": max_tokens,
                    "temperature": 0.0,
                },
            )
            r.raise_for_status()
            return r.json()

        ask("Hello", 4)  # warm-up, not counted
        cpu, wall = _cpu(), time.monotonic()
        for i, p in enumerate(prompts, 1):
            j = ask(p, 256)
            timings = j.get("timings", {})
            out.answers.append(j["choices"][0]["message"]["content"])
            out.tokens += int(j["usage"]["completion_tokens"])
            out.drafted += int(timings.get("draft_n", 0))
            out.accepted += int(timings.get("draft_n_accepted", 0))
            console.print(f"  {mode}: {i}/{len(prompts)} ({time.monotonic() - wall:.0f} s)")
        out.cpu_s, out.wall_s = _cpu() - cpu, time.monotonic() - wall
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--modes", default="plain,draft,ngram")
    ap.add_argument("--draft-max", type=int, default=16, help="draft tokens per step (16)")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "plain" not in modes:
        ap.error("--modes needs plain: answers are compared with it")
    console = Console()
    tasks = generate("classification", "train", args.tasks, seed=99)
    prompts = [PROMPTS["classification"]["plan"].format(**t.input) for t in tasks]
    passes = {m: one_pass(m, prompts, args.draft_max, console) for m in modes}
    plain = passes["plain"]
    table = Table(
        title=f"{TARGET} plans of classification x sequence ({len(prompts)} prompts, "
        "temperature 0, 1 slot, no prompt cache)"
    )
    for col in (
        "speculation",
        "tokens",
        "CPU ms/token",
        "wall ms/token",
        "drafts accepted",
        "answers identical to plain",
    ):
        table.add_column(col, justify="left" if col == "speculation" else "right")
    for mode, p in passes.items():
        same = sum(a == b for a, b in zip(p.answers, plain.answers, strict=True))
        table.add_row(
            mode if mode != "draft" else f"draft ({DRAFT}, up to {args.draft_max})",
            str(p.tokens),
            f"{p.cpu_s / p.tokens * 1e3:.1f}",
            f"{p.wall_s / p.tokens * 1e3:.1f}",
            f"{p.accepted} of {p.drafted}" if p.drafted else "-",
            f"{same} of {len(prompts)}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
