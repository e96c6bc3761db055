"""Span read benchmark, end to end: ``query_spans`` of one rollout until the caller holds the
parsed ``Span`` objects, through our client and through Agent Lightning 0.3's client, against
our store (SQLite) and the reference ``agl store``; 1k / 10k / 100k spans; bytes on the wire.

Why end to end (issue 15): the time until the response arrives leaves out parsing, which is
most of the cost for the caller; what a trainer or algorithm waits for is parsed spans. Each
client runs in its own process (``read_client.py``; Agent Lightning's in its own venv), so both
are timed the same way. The spans are the realistic workload of ``bench_common`` (Agent
Lightning-shaped and lightspan-shaped LLM-call, tool and reward spans), one rollout per size.

Rounds: in each round every (client, server, size) is timed ``repeats`` times (median taken);
ratios to "Agent Lightning's client against ``agl store``" (what its users have today) are
computed per round; the table shows median (min-max) over the rounds.

Bytes on the wire: the response body of ``POST /v1/agl/spans/search`` as each client asks for
it, received with ``Accept-Encoding: gzip, deflate`` (neither server compresses JSON): Agent
Lightning's client gets JSON from both servers; ours asks for the compact page
(``span_frames.py``), which our server sends and ``agl store`` does not (JSON then).

Usage: ``.venv/bin/python benchmarks/store_read.py [--quick] [--rounds 3] [--sizes
1000,10000,100000]``; ``--quick``: 1k and 10k spans, fewer repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from bench_common import (
    REFERENCE,
    Attempt,
    Target,
    agl_python,
    load_average,
    new_attempts,
    ours,
    reference,
    summary,
    workload,
)
from lightspan.store.api import span_frames
from store_ingest import send_http

HERE = Path(__file__).resolve().parent
console = Console(width=140)
REPEATS = {1_000: 7, 10_000: 3, 100_000: 1}


def load_rollout(target: Target, n: int, seed: int) -> str:
    """A fresh rollout holding ``n`` realistic spans (ingested over OTLP/HTTP)."""
    att: Attempt = new_attempts(target, 1, second_every=0)[0]
    batch = 500
    batches = workload("realistic", [att], (n + batch - 1) // batch, batch, seed)
    asyncio.run(send_http(target, batches, 2))
    return att.rollout_id


def wire_bytes(target: Target, rollout_id: str, kind: str) -> int:
    """The response body as the ``kind`` client asks for it: Agent Lightning's with its
    default headers, ours with the ``Accept`` of the compact page (``span_frames.py``)."""
    body = {"rollout_id": rollout_id, "limit": -1, "offset": 0, "filter_logic": "and"}
    body |= {"sort_by": "sequence_id", "sort_order": "asc"}
    headers = {"accept-encoding": "gzip, deflate"}
    if kind == "lightspan":
        headers["accept"] = f"{span_frames.MEDIA_TYPE}, application/json;q=0.9"
    r = httpx.post(target.http + "/v1/agl/spans/search", json=body, headers=headers, timeout=600)
    r.raise_for_status()
    return r.num_bytes_downloaded


def run_client(kind: str, jobs: list[dict]) -> list[dict]:
    python = str(agl_python()) if kind == "agl" else sys.executable
    proc = subprocess.run(
        [python, str(HERE / "read_client.py")],
        input=json.dumps({"client": kind, "jobs": jobs}),
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        timeout=3600,
    )
    if proc.returncode:
        raise RuntimeError(f"{kind} client failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k spans, fewer repeats")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    repeats = dict(REPEATS)
    if args.quick:
        sizes = [s for s in sizes if s <= 10_000]
        repeats = {1_000: 3, 10_000: 2}

    loads = [load_average()]
    workdir = Path(tempfile.mkdtemp(prefix="lightspan-read-"))
    wall: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    cpu: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    ratio: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    wire: dict[tuple[str, str, int], int] = {}
    with ExitStack() as stack:
        servers = {
            "agl store": stack.enter_context(reference(workdir)),
            "lightspan sqlite": stack.enter_context(
                ours("lightspan sqlite", "sqlite", str(workdir / "read.db"), workdir)
            ),
        }
        rollouts = {}
        for name, target in servers.items():
            for n in sizes:
                rollouts[(name, n)] = load_rollout(target, n, seed=n)
                for kind in ("agl", "lightspan"):
                    wire[(kind, name, n)] = wire_bytes(target, rollouts[(name, n)], kind)
                console.print(
                    f"{name}: {n:,} spans loaded, {wire[('agl', name, n)]:,} bytes on the wire "
                    f"(JSON), {wire[('lightspan', name, n)]:,} to our client"
                )
        for rnd in range(args.rounds):
            clients = ["agl", "lightspan"] if rnd % 2 == 0 else ["lightspan", "agl"]
            this_round: dict[tuple[str, str, int], float] = {}
            for kind in clients:
                jobs, keys = [], []
                for name, target in servers.items():
                    for n in sizes:
                        jobs.append(
                            {
                                "address": target.http,
                                "rollout_id": rollouts[(name, n)],
                                "n": n,
                                "repeats": repeats.get(n, 1),
                            }
                        )
                        keys.append((kind, name, n))
                for key, res in zip(keys, run_client(kind, jobs), strict=True):
                    this_round[key] = statistics.median(res["wall_ms"])
                    wall[key].append(this_round[key])
                    cpu[key].append(statistics.median(res["cpu_ms"]))
                    console.print(
                        f"round {rnd + 1}: {key[0]:9} client, {key[1]:16} {key[2]:7,} spans: "
                        f"{this_round[key]:8.1f} ms"
                    )
            for key, value in this_round.items():
                base = this_round[("agl", "agl store", key[2])]
                ratio[key].append(base / value)
            loads.append(load_average())
    shutil.rmtree(workdir, ignore_errors=True)

    table = Table(
        title=f"query_spans of one rollout until the caller holds parsed Span objects; median "
        f"(min-max) of {args.rounds} rounds"
    )
    for col in ("client", "server", "spans", "wall ms", "client CPU ms", "speed-up vs agl/agl"):
        table.add_column(col, justify="left" if col in ("client", "server") else "right")
    table.add_column("bytes on the wire", justify="right")
    for key in sorted(wall, key=lambda k: (k[2], k[0] != "agl", k[1] != "agl store")):
        kind, name, n = key
        table.add_row(
            "Agent Lightning 0.3" if kind == "agl" else "lightspan",
            REFERENCE if name == "agl store" else name,
            f"{n:,}",
            summary(wall[key], "{:,.1f}"),
            summary(cpu[key], "{:,.1f}"),
            summary(ratio[key], "{:.2f}x"),
            f"{wire[key]:,}",
        )
    console.print(table)
    console.print(
        "speed-up: Agent Lightning's client against agl store (what its users wait for today) "
        "over this row, per round. Load averages (1/5/15 min) before and after each round: "
        + "; ".join(loads)
    )


if __name__ == "__main__":
    main()
