"""Soak: a real ``lightspan store serve`` (SQLite) under mixed load, clean and with 50,000
stale running rollouts, for a bounded time; p99 intake latency and RSS over time.

Why: issue 16 found that auto-registered rollouts whose root span never arrives accumulate,
and the health scan then stalled ingestion (p99 61 ms -> 1.5 s with 50,000 of them). Goal:
p99 intake latency under load within 2x of the clean server's, RSS flat.

Load, per phase (``--seconds`` each), all on 127.0.0.1 through one asyncio client:
  * ingestion : OTLP/HTTP exports of 50 spans (one new rollout each) back to back, latency kept
  * queries   : span queries and rollout searches
  * runners   : enqueue, dequeue, mark succeeded
  * the server's health scan every ``--scan-interval`` seconds (1 s: 5x the default rate)
Phases: ``clean`` (empty database) and ``stale`` (50,000 auto-registered rollouts whose root
span never ended, registered beforehand over OTLP). The server's RSS is sampled every
``--sample-every`` seconds (default 2) with the spans stored so far, and printed as a table
(RSS over time, per phase) with the growth per 100,000 spans in each half of the phase: a
leak keeps the second half's growth near the first's, a cache filling towards its bound
does not.

Run:  .venv/bin/python benchmarks/soak.py [--seconds 60] [--stale 50000] [--phases clean,stale]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
PB = {"content-type": "application/x-protobuf"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def export_body(rollouts: list[str], spans_each: int, tag: str) -> bytes:
    """Spans of ``rollouts`` (non-root: their root never ends), ``spans_each`` per rollout."""
    req = ExportTraceServiceRequest()
    now = time.time_ns()
    for r in rollouts:
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(
            [kv("agentlightning.rollout_id", r), kv("agentlightning.attempt_id", "at-1")]
        )
        ss = rs.scope_spans.add()
        for i in range(spans_each):
            s = ss.spans.add()
            s.trace_id = os.urandom(16)
            s.span_id = os.urandom(8)
            s.parent_span_id = os.urandom(8)
            s.name = f"{tag}-{i}"
            s.start_time_unix_nano = now
            s.end_time_unix_nano = now + 1000
            s.attributes.extend([kv("gen_ai.request.model", "m"), kv("i", str(i))])
    return req.SerializeToString()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, db: Path, scan_interval: float) -> None:
        self.port = free_port()
        self.log = open(db.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lightspan.store.server.cli",
                "serve",
                "--backend",
                "sqlite",
                "--db",
                str(db),
                "--port",
                str(self.port),
                "--grpc-port",
                "-1",
                "--scan-interval",
                str(scan_interval),
                "--sqlite-synchronous",
                "NORMAL",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v1/agl/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


async def populate(url: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        for start in range(0, n, 1000):
            ids = [f"ro-stale-{i:08d}" for i in range(start, min(n, start + 1000))]
            r = await c.post("/v1/traces", content=export_body(ids, 1, "stale"), headers=PB)
            r.raise_for_status()


SPANS_PER_EXPORT = 50


async def load(url: str, pid: int, seconds: float, every: float) -> dict[str, object]:
    lat: list[float] = []
    rss: list[tuple[float, int, float]] = []  # (seconds, spans stored, MB)
    counts = {"exports": 0, "queries": 0, "runner_rounds": 0}
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:

        async def ingest() -> None:
            k = 0
            while time.monotonic() < stop:
                k += 1
                body = export_body([f"ro-live-{pid}-{k}"], SPANS_PER_EXPORT, "live")
                t = time.perf_counter()
                r = await c.post("/v1/traces", content=body, headers=PB)
                lat.append(time.perf_counter() - t)
                r.raise_for_status()
                counts["exports"] += 1

        async def query() -> None:
            k = 0
            while time.monotonic() < stop:
                k += 1
                await c.get("/v1/agl/spans", params={"rollout_id": f"ro-live-{pid}-{max(1, k)}"})
                await c.post(
                    "/v1/agl/rollouts/search", json={"status_in": ["running"], "limit": 50}
                )
                counts["queries"] += 2
                await asyncio.sleep(0.02)

        async def runner() -> None:
            while time.monotonic() < stop:
                await c.post("/v1/agl/queues/rollouts/enqueue", json={"rollouts": [{"input": 1}]})
                got = (await c.post("/v1/agl/queues/rollouts/dequeue", json={"limit": 1})).json()
                for ar in got:
                    await c.post(
                        f"/v1/agl/rollouts/{ar['rollout_id']}/attempts/{ar['attempt']['attempt_id']}",
                        json={"status": "succeeded"},
                    )
                counts["runner_rounds"] += 1
                await asyncio.sleep(0.05)

        async def sample() -> None:
            start = time.monotonic()
            while time.monotonic() < stop:
                spans = counts["exports"] * SPANS_PER_EXPORT
                rss.append((time.monotonic() - start, spans, rss_mb(pid)))
                await asyncio.sleep(every)

        await asyncio.gather(ingest(), query(), runner(), sample())
    q = statistics.quantiles(lat, n=100)
    return {"p50": q[49] * 1000, "p99": q[98] * 1000, "rss": rss, **counts}


async def phase(name: str, stale: int, seconds: float, scan_interval: float, every: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        server = Server(Path(d) / f"{name}.db", scan_interval)
        try:
            if stale:
                t = time.perf_counter()
                await populate(server.url, stale)
                print(
                    f"{name}: {stale:,} stale rollouts registered in {time.perf_counter() - t:.0f} s"
                )
            return {"name": name, **(await load(server.url, server.proc.pid, seconds, every))}
        finally:
            server.stop()


def growth(samples: list[tuple[float, int, float]]) -> str:
    """RSS growth per 100,000 spans stored, in the first and the second half of the samples."""
    if len(samples) < 5:
        return "-"
    mid = len(samples) // 2

    def per(a: tuple[float, int, float], b: tuple[float, int, float]) -> str:
        spans = b[1] - a[1]
        return f"{(b[2] - a[2]) / spans * 100_000:.1f}" if spans else "-"

    return f"{per(samples[0], samples[mid])} / {per(samples[mid], samples[-1])}"


async def main(
    seconds: float, stale: int, scan_interval: float, phases: list[str], every: float
) -> None:
    results = []
    for name in phases:
        results.append(
            await phase(name, stale if name == "stale" else 0, seconds, scan_interval, every)
        )
    table = Table(title=f"soak: {seconds:.0f} s per phase, health scan every {scan_interval} s")
    for col in ("phase", "exports", "intake p50 ms", "intake p99 ms", "queries", "runner rounds",
                "RSS MB first", "RSS MB max", "RSS MB last",
                "RSS MB per 100k spans, 1st / 2nd half"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in results:
        rss = [mb for _, _, mb in r["rss"]]
        table.add_row(
            r["name"],
            str(r["exports"]),
            f"{r['p50']:.1f}",
            f"{r['p99']:.1f}",
            str(r["queries"]),
            str(r["runner_rounds"]),
            f"{rss[0]:.0f}",
            f"{max(rss):.0f}",
            f"{rss[-1]:.0f}",
            growth(r["rss"]),
        )
    Console().print(table)
    over_time = Table(title="server RSS over time (MB), spans stored so far")
    over_time.add_column("s", justify="right")
    for r in results:
        over_time.add_column(f"{r['name']}: spans", justify="right")
        over_time.add_column(f"{r['name']}: RSS MB", justify="right")
    for k in range(max(len(r["rss"]) for r in results)):
        row = [""]
        for r in results:
            if k < len(r["rss"]):
                t, spans, mb = r["rss"][k]
                row[0] = row[0] or f"{t:.0f}"
                row += [f"{spans:,}", f"{mb:.0f}"]
            else:
                row += ["", ""]
        over_time.add_row(*row)
    Console().print(over_time)
    by_name = {r["name"]: r for r in results}
    if "clean" in by_name and "stale" in by_name:
        ratio = by_name["stale"]["p99"] / by_name["clean"]["p99"]
        print(f"p99 intake latency, stale / clean: {ratio:.2f}x (goal: <= 2x)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--stale", type=int, default=50_000)
    ap.add_argument("--scan-interval", type=float, default=1.0)
    ap.add_argument("--phases", default="clean,stale", help="comma-separated: clean, stale")
    ap.add_argument("--sample-every", type=float, default=2.0, help="seconds between RSS samples")
    args = ap.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    if not phases or set(phases) - {"clean", "stale"}:
        ap.error(f"--phases must name clean and/or stale, got {args.phases!r}")
    asyncio.run(main(args.seconds, args.stale, args.scan_interval, phases, args.sample_every))
