"""Worker of ``store_read.py``: times ``query_spans`` through one client library, in its own
process, until the caller holds the parsed ``Span`` objects.

Why a separate process: Agent Lightning's client runs in its own venv (it pins its own
OpenTelemetry, pydantic, ...); running ours the same way keeps the two measurements alike
(fresh interpreter, same harness code, same timer).

Input (stdin, JSON): ``{"client": "lightspan"|"agl", "jobs": [{"address", "rollout_id", "n",
"repeats"}, ...]}``. Output (stdout, JSON): per job, the wall milliseconds and process-CPU
milliseconds of each timed call (after one untimed warm-up call), the page of the previous call
freed before the timer starts (the same for both clients).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


def _client(kind: str, address: str) -> Any:
    if kind == "agl":
        from agentlightning.store.client_server import LightningStoreClient as AglClient

        return AglClient(address)
    from lightspan.store.api.client import LightningStoreClient

    return LightningStoreClient(address, timeout=600)


async def _run(kind: str, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for job in jobs:
        client = _client(kind, job["address"])
        try:
            await client.query_spans(job["rollout_id"])  # warm-up: connection, imports
            wall, cpu = [], []
            for _ in range(job["repeats"]):
                # The previous page is freed before the timer starts: freeing 10,000 spans
                # (~25 ms) is not part of reading the next ones.
                page = items = None
                c0, t0 = time.process_time(), time.perf_counter()
                page = await client.query_spans(job["rollout_id"])
                items = page.items
                wall.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
                if len(items) != job["n"] or type(items[0]).__name__ != "Span":
                    raise RuntimeError(f"{kind} client read {len(items)} of {job['n']} spans")
            out.append({"wall_ms": wall, "cpu_ms": cpu})
        finally:
            await client.close()
    return out


def main() -> None:
    request = json.load(sys.stdin)
    json.dump(asyncio.run(_run(request["client"], request["jobs"])), sys.stdout)


if __name__ == "__main__":
    main()
