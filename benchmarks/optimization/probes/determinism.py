"""Are temperature-0 answers of a local model server repeatable? Per server setting.

    .venv/bin/python benchmarks/optimization/probes/determinism.py [--model M]
        [--servers 4,1,1-repeatable]

Why: a benchmark (and the trainer) that scores each (configuration, task) once assumes the
same request gets the same answer. llama.cpp's numerics depend on how requests are batched
(several slots decode together) and on prompt-cache reuse (a cached prefix leaves the rest of
the prompt to a batch of another size), so that assumption may not hold. This sends the same
prompts (the extraction worker's, short answers; the arithmetic ``answer`` prompt, 96-token
answers; the classification ``plan`` prompt, up to 256 tokens) in several passes, 4 in flight
or one at a time, in the same order or reversed (another request before each one), and prints
how many answers differ from the first pass. Server settings: ``N`` request slots, and
``1-repeatable``: one slot without the prompt cache (``lightspan llm serve --repeatable``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import httpx
from benchmarks.optimization.tasks import generate
from benchmarks.optimization.workflows import PROMPTS

from lightspan.localllm.process import LocalModelProcess

PASSES = [
    ("4 in flight", 4, False),
    ("4 in flight, again", 4, False),
    ("one at a time", 1, False),
    ("one at a time, reversed order", 1, True),
    ("one at a time, again", 1, False),
]
KINDS = ("short", "long", "plan")


def prompts(seed: int) -> list[tuple[str, str, int]]:
    """(kind, prompt, max_tokens): extraction worker prompts, arithmetic answers, plans."""
    out = []
    for t in generate("extraction", "val", 6, seed=seed):
        for f in t.input["fields"].split(", "):
            item = PROMPTS["extraction"]["item"].format(text=t.input["text"], field=f)
            out.append(("short", item, 32))
    for t in generate("arithmetic", "val", 4, seed=seed):
        out.append(
            ("long", PROMPTS["arithmetic"]["answer"].format(question=t.input["question"]), 96)
        )
    for t in generate("classification", "val", 4, seed=seed):
        out.append(("plan", PROMPTS["classification"]["plan"].format(**t.input), 256))
    return out


async def one_pass(url: str, model: str, jobs, conc: int, reverse: bool) -> list[str]:  # type: ignore[no-untyped-def]
    """The answers in ``jobs``' order; sent ``conc`` at a time, last job first if ``reverse``."""
    sem = asyncio.Semaphore(conc)
    async with httpx.AsyncClient(timeout=600) as c:

        async def one(p: str, mt: int) -> str:
            async with sem:
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": p}],
                    "max_tokens": mt,
                    "temperature": 0.0,
                }
                r = await c.post(url + "/chat/completions", json=body)
                r.raise_for_status()
                return r.json()["choices"][0]["message"]["content"]

        if conc == 1:  # strictly one after the other, in the order asked
            order = range(len(jobs) - 1, -1, -1) if reverse else range(len(jobs))
            got = {i: await one(jobs[i][1], jobs[i][2]) for i in order}
            return [got[i] for i in range(len(jobs))]
        return list(await asyncio.gather(*(one(p, mt) for _, p, mt in jobs)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument(
        "--servers",
        default="4,1,1-repeatable",
        help="server settings to try (comma list): N slots, or 1-repeatable (no prompt cache)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    jobs = prompts(args.seed)
    kinds = [k for k, _, _ in jobs]
    print(
        f"{args.model}: "
        + ", ".join(f"{kinds.count(k)} {k}" for k in KINDS)
        + " prompts (short: <= 32 tokens, long: 96, plan: 256), temperature 0, 1 thread"
    )
    print("| server | pass | s | " + " | ".join(f"{k} differing from pass 1" for k in KINDS) + " |")
    print("|---|---|---|" + "---|" * len(KINDS))
    for setting in args.servers.split(","):
        slots = int(setting.split("-")[0])
        repeatable = setting.endswith("-repeatable")
        with LocalModelProcess(args.model, threads=1, parallel=slots, repeatable=repeatable) as srv:
            ref: list[str] | None = None
            for label, conc, reverse in PASSES:
                t0 = time.perf_counter()
                out = asyncio.run(one_pass(srv.base_url, args.model, jobs, conc, reverse))
                ref = ref or out
                d = [k for k, a, b in zip(kinds, ref, out, strict=True) if a != b]
                cells = " | ".join(f"{d.count(k)}/{kinds.count(k)}" for k in KINDS)
                print(
                    f"| {setting} | {label} | {time.perf_counter() - t0:.0f} | {cells} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
