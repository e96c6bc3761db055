"""Store ingestion benchmark: lightspan's store vs Agent Lightning 0.3's ``agl store``.

What a skeptic would check (issue 15), and how this script answers it:

* the workload is the one real users send (see ``bench_common``: spans shaped as Agent
  Lightning's tracer and ours write them, ~600 bytes each, many rollouts and attempts, one
  request = one runner's batch over several rollouts); ``--workload synthetic`` runs the
  earlier one (short spans, one rollout) for comparison;
* the reference is ``agl store`` exactly as its users start it (its default in-memory store,
  OTLP/HTTP: it has no gRPC intake), a fresh process every round, and its numbers are measured
  here, in the same round as ours;
* every configuration (store, transport, number of senders) is its own row: no "best of";
* at least 3 rounds; the ratio to the reference is computed per round (same round, same
  senders) and reported as median (min-max) over the rounds; the order of the servers
  alternates between rounds;
* server CPU microseconds per span (the server process and its children, from ``/proc``) beside
  spans/s: the client shares the 2 cores with the server, so spans/s moves with the machine's
  load while CPU per span moves much less.

Senders: ``N`` threads of the standard library's ``http.client`` (one keep-alive connection
each) or ``N`` concurrent gRPC calls on one channel, posting pre-encoded protobuf: the load
generator is the cheapest part and identical for every target.

Usage: ``.venv/bin/python benchmarks/store_ingest.py [--quick] [--rounds 3] [--batches 60]
[--batch 512] [--senders 1,4] [--workload realistic|synthetic] [--backends sqlite,memory,postgres]
[--pg-dsn DSN] [--no-reference]``. PostgreSQL without ``--pg-dsn``: a private throw-away cluster.
The reference needs the venv of ``.ci/setup.d/40-agl-interop.sh``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import shutil
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from queue import Empty, Queue
from urllib.parse import urlsplit

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from rich.console import Console
from rich.table import Table

from bench_common import (
    REFERENCE,
    Target,
    check_stored,
    cpu_seconds,
    load_average,
    new_attempts,
    ours,
    private_postgres,
    reference,
    summary,
    workload,
)

console = Console(width=140)


async def send_http(target: Target, batches: list[bytes], concurrency: int) -> None:
    """POST the batches from ``concurrency`` threads, each on its own keep-alive connection of
    the standard library's ``http.client`` (httpx's pure-Python HTTP/1.1 costs ~3x more client
    CPU per request, CPU the server would then lack on 2 cores)."""
    queue: Queue[bytes] = Queue()
    for b in batches:
        queue.put_nowait(b)
    url = urlsplit(target.http)
    headers = {"content-type": "application/x-protobuf"}

    def worker() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
        try:
            while True:
                try:
                    body = queue.get_nowait()
                except Empty:
                    return
                conn.request("POST", "/v1/traces", body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                if r.status != 200:
                    raise RuntimeError(f"{target.label}: HTTP {r.status} {data[:300]!r}")
                resp = ExportTraceServiceResponse.FromString(data)
                if resp.partial_success.rejected_spans:
                    raise RuntimeError(f"{target.label}: {resp.partial_success.error_message}")
        finally:
            conn.close()

    await asyncio.gather(*(asyncio.to_thread(worker) for _ in range(concurrency)))


async def send_grpc(target: Target, batches: list[bytes], concurrency: int) -> None:
    assert target.grpc
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    async with grpc.aio.insecure_channel(
        target.grpc, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )

        async def worker() -> None:
            while not queue.empty():
                resp = await export(queue.get_nowait(), timeout=300)
                if resp.partial_success.rejected_spans:
                    raise RuntimeError(f"{target.label}: {resp.partial_success.error_message}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def ingest(
    target: Target, transport: str, senders: int, args: argparse.Namespace, seed: int
) -> tuple[float, float, int]:
    """(spans/s, server CPU us per span, OTLP bytes per span) of one measurement on a fresh set
    of rollouts."""
    attempts = new_attempts(target, args.rollouts)
    send = send_grpc if transport == "grpc" else send_http
    asyncio.run(send(target, workload(args.workload, attempts, 2, args.batch, seed + 1), 1))
    batches = workload(args.workload, attempts, args.batches, args.batch, seed)
    n = args.batches * args.batch
    cpu0 = cpu_seconds(target.proc.pid)
    t0 = time.perf_counter()
    asyncio.run(send(target, batches, senders))
    elapsed = time.perf_counter() - t0
    cpu_us = (cpu_seconds(target.proc.pid) - cpu0) / n * 1e6
    check_stored(target, attempts)
    return n / elapsed, cpu_us, sum(len(b) for b in batches) // n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="defaults of 16 requests and 4 senders (3 rounds)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=None, help="requests per measurement (60)")
    parser.add_argument("--batch", type=int, default=512, help="spans per request (SDK default)")
    parser.add_argument("--senders", default=None, help="comma-separated sender counts (1,4)")
    parser.add_argument("--rollouts", type=int, default=64, help="rollouts per measurement")
    parser.add_argument("--workload", choices=("realistic", "synthetic"), default="realistic")
    parser.add_argument(
        "--backends",
        default="sqlite",
        help="of sqlite,memory,postgres,sqlite-python (SQLite with the Python OTLP converter, "
        "LIGHTSPAN_NATIVE_INTAKE=0)",
    )
    parser.add_argument("--pg-dsn", default=None, help="PostgreSQL DSN (default: private cluster)")
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()
    args.batches = args.batches or (16 if args.quick else 60)
    args.senders = args.senders or ("4" if args.quick else "1,4")
    senders = [int(s) for s in args.senders.split(",")]
    backends = args.backends.split(",")
    if args.rounds < 3:
        console.print("[yellow]fewer than 3 rounds: the range means little[/]")

    # (label, transport, senders) -> per-round values
    rate: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    cpu: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    ratio: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    cpu_ratio: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    size: dict[str, int] = {}
    loads: list[str] = [load_average()]
    workdir = Path(tempfile.mkdtemp(prefix="lightspan-bench-"))
    with ExitStack() as stack:
        pg_dsn = args.pg_dsn
        if "postgres" in backends and not pg_dsn:
            pg_dsn = stack.enter_context(private_postgres())
        for rnd in range(args.rounds):
            servers: list[tuple[str, tuple[str, ...]]] = []
            if not args.no_reference:
                servers.append(("reference", ("http",)))
            servers += [(b, ("grpc", "http")) for b in backends]
            if rnd % 2:
                servers.reverse()
            ref_rate: dict[int, float] = {}
            ref_cpu: dict[int, float] = {}
            for kind, transports in servers:
                if kind == "reference":
                    cm = reference(workdir)
                else:
                    backend = "sqlite" if kind == "sqlite-python" else kind
                    db = {"sqlite": str(workdir / f"r{rnd}{kind}.db"), "postgres": pg_dsn}.get(
                        backend
                    )
                    if kind == "postgres":  # fresh tables each round
                        _drop_postgres_tables(pg_dsn)
                    env = {"LIGHTSPAN_NATIVE_INTAKE": "0"} if kind == "sqlite-python" else None
                    cm = ours(f"lightspan {kind}", backend, db, workdir, env)
                with cm as target:
                    for transport in transports:
                        for s in senders:
                            r, c, sz = ingest(target, transport, s, args, seed=rnd * 100 + s)
                            key = (target.label, transport, s)
                            rate[key].append(r)
                            cpu[key].append(c)
                            size[target.label] = sz
                            if kind == "reference":
                                ref_rate[s], ref_cpu[s] = r, c
                            console.print(
                                f"round {rnd + 1}: {target.label:24} {transport:4} {s} senders: "
                                f"{r:9,.0f} spans/s, {c:6.1f} us CPU/span"
                            )
            for (label, transport, s), values in rate.items():
                if label != REFERENCE and s in ref_rate:
                    ratio[(label, transport, s)].append(values[-1] / ref_rate[s])
                    cpu_ratio[(label, transport, s)].append(
                        ref_cpu[s] / cpu[(label, transport, s)][-1]
                    )
            loads.append(load_average())
    shutil.rmtree(workdir, ignore_errors=True)

    table = Table(
        title=f"Span ingestion, {args.workload} workload ({max(size.values())}"
        f" bytes of OTLP per span, requests of {args.batch} spans); median (min-max) of "
        f"{args.rounds} rounds"
    )
    cols = ("store", "transport", "senders", "spans/s", "vs reference, per round")
    for col in (*cols, "server CPU us/span", "CPU/span, reference over ours"):
        table.add_column(col, justify="left" if col in ("store", "transport") else "right")
    for key in sorted(rate, key=lambda k: (k[0] != REFERENCE, k)):
        label, transport, s = key
        table.add_row(
            label,
            "OTLP/gRPC" if transport == "grpc" else "OTLP/HTTP",
            str(s),
            summary(rate[key]),
            "1.0x" if label == REFERENCE else summary(ratio[key], "{:.1f}x"),
            summary(cpu[key], "{:.1f}"),
            "1.0x" if label == REFERENCE else summary(cpu_ratio[key], "{:.1f}x"),
        )
    console.print(table)
    console.print(
        "Ratio: our spans/s over the reference's (OTLP/HTTP, same number of senders) in the same "
        "round. Load averages (1/5/15 min) before and after each round: " + "; ".join(loads)
    )


def _drop_postgres_tables(dsn: str | None) -> None:
    """Empty the private cluster between rounds (each round starts on fresh tables)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


if __name__ == "__main__":
    main()
