"""CPU per chat call of the engine's LLM client (the ``openai`` SDK) vs a bare httpx POST.

Why: in ``benchmarks/runner.py``'s 3-step rows most of the runner's CPU is the three LLM calls.
This measures, side by side in one run, the client-side CPU (``time.process_time`` of the
calling process; the fake server runs in a child process so its CPU is not counted) of:

* ``openai SDK``: ``ChatClients.chat`` as the engine calls it (``AsyncOpenAI``).
* ``httpx bare``: one ``httpx.AsyncClient.post`` of the same JSON, response parsed with
  ``json.loads`` -- the floor a lean client could reach (no retries, no typed response).

Usage: ``.venv/bin/python benchmarks/llm_client.py --calls 400 --rounds 3``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
from typing import Any

import httpx

from lightspan.engine.llm import ChatClients
from lightspan.engine.resources import LLMResource


def _serve(port_q: Any) -> None:
    import sys

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from runner import start_fake_llm

    server, url = start_fake_llm()
    port_q.put(url)
    server.serve_forever()


async def _sdk(url: str, calls: int, concurrency: int) -> float:
    clients = ChatClients()
    llm = LLMResource(endpoint=url, model="fake")
    msgs = [{"role": "user", "content": "say 1"}]
    await clients.chat(llm, msgs)
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await clients.chat(llm, msgs)

    t0 = time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    cpu = time.process_time() - t0
    await clients.aclose()
    return cpu


async def _bare(url: str, calls: int, concurrency: int) -> float:
    client = httpx.AsyncClient(base_url=url, timeout=120)
    body = {"model": "fake", "messages": [{"role": "user", "content": "say 1"}]}
    await client.post("/chat/completions", json=body)
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            r = await client.post("/chat/completions", json=body)
            json.loads(r.content)

    t0 = time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    cpu = time.process_time() - t0
    await client.aclose()
    return cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    q: Any = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_serve, args=(q,), daemon=True)
    proc.start()
    url = q.get(timeout=30)
    rows = []
    for name, fn in (("openai SDK (ChatClients.chat)", _sdk), ("httpx bare POST", _bare)):
        cpus = [asyncio.run(fn(url, args.calls, args.concurrency)) for _ in range(args.rounds)]
        ms = [c / args.calls * 1000 for c in cpus]
        rows.append((name, statistics.median(ms), min(ms), max(ms)))
    proc.terminate()
    print(
        f"\nLLM client CPU per call: {args.calls} calls x {args.rounds} rounds, "
        f"{args.concurrency} concurrent, median [min-max]"
    )
    for name, med, lo, hi in rows:
        print(f"{name:<32} {med:6.2f} ms [{lo:.2f}-{hi:.2f}]")


if __name__ == "__main__":
    main()
