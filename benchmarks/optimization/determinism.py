"""Are temperature-0 answers of a local model server repeatable? Per request-slot setting.

    .venv/bin/python benchmarks/optimization/determinism.py [--model M] [--slots 4,1]

Why: a benchmark (and the trainer) that scores each (configuration, task) once assumes the
same request gets the same answer. llama.cpp's numerics depend on how requests are batched
(several slots decode together) and on prompt-cache reuse, so that assumption may not hold.
This sends the same prompts (the extraction worker's, short answers; the arithmetic
``answer`` prompt, long answers) in several passes, 4 in flight or one at a time, with and
without ``cache_prompt``, and prints how many answers differ from the first pass.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
from benchmarks.optimization.tasks import generate
from benchmarks.optimization.workflows import PROMPTS

from lightspan.localllm.process import LocalModelProcess

PASSES = [
    ("4 in flight", 4, {}),
    ("4 in flight, again", 4, {}),
    ("one at a time", 1, {}),
    ("one at a time, again", 1, {}),
    ("4 in flight, cache_prompt off", 4, {"cache_prompt": False}),
]


def prompts(seed: int) -> list[tuple[str, str, int]]:
    """(kind, prompt, max_tokens): extraction worker prompts and arithmetic answers."""
    out = []
    for t in generate("extraction", "val", 6, seed=seed):
        for f in t.input["fields"].split(", "):
            item = PROMPTS["extraction"]["item"].format(text=t.input["text"], field=f)
            out.append(("short", item, 32))
    for t in generate("arithmetic", "val", 4, seed=seed):
        out.append(
            ("long", PROMPTS["arithmetic"]["answer"].format(question=t.input["question"]), 96)
        )
    return out


async def one_pass(url: str, model: str, jobs, conc: int, extra: dict) -> list[str]:  # type: ignore[no-untyped-def]
    sem = asyncio.Semaphore(conc)
    async with httpx.AsyncClient(timeout=600) as c:

        async def one(p: str, mt: int) -> str:
            async with sem:
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": p}],
                    "max_tokens": mt,
                    "temperature": 0.0,
                    **extra,
                }
                r = await c.post(url + "/chat/completions", json=body)
                r.raise_for_status()
                return r.json()["choices"][0]["message"]["content"]

        return await asyncio.gather(*(one(p, mt) for _, p, mt in jobs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--slots", default="4,1", help="request-slot settings to try (comma list)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    jobs = prompts(args.seed)
    kinds = [k for k, _, _ in jobs]
    print(
        f"{args.model}: {kinds.count('short')} short-answer and {kinds.count('long')} "
        "long-answer prompts, temperature 0, 1 thread"
    )
    print("| slots | pass | s | short answers differing from pass 1 | long answers differing |")
    print("|---|---|---|---|---|")
    for slots in [int(x) for x in args.slots.split(",")]:
        with LocalModelProcess(args.model, threads=1, parallel=slots) as srv:
            ref: list[str] | None = None
            for label, conc, extra in PASSES:
                t0 = time.perf_counter()
                out = asyncio.run(one_pass(srv.base_url, args.model, jobs, conc, extra))
                ref = ref or out
                d = [k for k, a, b in zip(kinds, ref, out, strict=True) if a != b]
                print(
                    f"| {slots} | {label} | {time.perf_counter() - t0:.0f} | "
                    f"{d.count('short')}/{kinds.count('short')} | "
                    f"{d.count('long')}/{kinds.count('long')} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
