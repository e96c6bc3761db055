"""Store ingestion and query benchmark: lightspan's store vs Agent Lightning 0.3's ``agl store``.

Measures, in one run on one machine (figures drift between runs, so only ratios within a run
mean much):

* spans/s ingested over OTLP/gRPC and OTLP/HTTP (batches of 512 spans with ~10 attributes,
  protobuf pre-encoded so the client's encoding cost is not measured) into our memory, SQLite
  and PostgreSQL backends, and over OTLP/HTTP into the reference ``agl store`` (in-memory; it has
  no gRPC intake);
* ``query_spans`` latency (REST ``GET /v1/agl/spans``, response parsed) for rollouts of 1,000
  and 10,000 spans.

Goals (issue 4): ingestion >= 10x the reference on SQLite; a 10,000-span rollout read < 100 ms.

Usage: ``.venv/bin/python benchmarks/store_ingest.py [--batches 100] [--concurrency 4]
[--pg-dsn DSN | --no-postgres] [--no-reference] [--baseline-src DIR]``. PostgreSQL: without ``--pg-dsn`` a private
throw-away cluster is started (Debian's ``postgresql`` binaries, as the tests do). The reference
needs the Agent Lightning venv of ``.ci/setup.d/40-agl-interop.sh``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from urllib.parse import urlsplit

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
AGL_VENV = Path(os.environ.get("LIGHTSPAN_AGL_VENV", Path.home() / ".cache/lightspan/agl-venv"))
BATCH = 512
console = Console()


# --------------------------------------------------------------------------- workload


def _kv(key: str, value: object) -> KeyValue:
    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    else:
        v.string_value = str(value)
    return KeyValue(key=key, value=v)


def make_batch(rollout_id: str, attempt_id: str, batch_no: int, n: int = BATCH) -> bytes:
    """One OTLP export request of ``n`` LLM-call spans with 10 attributes each."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(
        [
            _kv("service.name", "bench"),
            _kv("agentlightning.rollout_id", rollout_id),
            _kv("agentlightning.attempt_id", attempt_id),
        ]
    )
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    trace_id = os.urandom(16)
    now = time.time_ns()
    for i in range(n):
        s = ss.spans.add()
        s.trace_id = trace_id
        s.span_id = os.urandom(8)
        s.parent_span_id = os.urandom(8)
        s.name = "openai.chat.completion"
        s.kind = 3
        s.start_time_unix_nano = now + i * 1000
        s.end_time_unix_nano = now + i * 1000 + 700
        k = batch_no * n + i
        s.attributes.extend(
            [
                _kv("gen_ai.operation.name", "chat"),
                _kv("gen_ai.request.model", "qwen2.5-coder-0.5b"),
                _kv("gen_ai.usage.input_tokens", 100 + i % 50),
                _kv("gen_ai.usage.output_tokens", 20 + i % 7),
                _kv("gen_ai.prompt.0.role", "user"),
                _kv("gen_ai.prompt.0.content", f"Question {k}: what is {i} + {i}?"),
                _kv("gen_ai.completion.0.role", "assistant"),
                _kv("gen_ai.completion.0.content", f"The answer is {2 * i}."),
                _kv("gen_ai.request.temperature", 0.7),
                _kv("gen_ai.response.id", f"chatcmpl-{k}"),
            ]
        )
        s.status.code = 1
    return req.SerializeToString()


# --------------------------------------------------------------------------- servers


@dataclass
class Target:
    label: str
    http: str  # REST/OTLP-HTTP root
    grpc: str | None  # host:port or None
    proc: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(target: Target, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            raise RuntimeError(f"{target.label} exited:\n{target.log.read_text()[-2000:]}")
        try:
            if httpx.get(target.http + "/v1/agl/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{target.label} not healthy after {timeout}s")


@contextmanager
def ours(
    label: str, backend: str, db: str | None, workdir: Path, src: str | None = None
) -> Iterator[Target]:
    """Our server; ``src``: run the ``lightspan`` package found there instead (a baseline)."""
    port, grpc_port = _free_port(), _free_port()
    args = [sys.executable, "-m", "lightspan.store.cli", "serve", "--backend", backend]
    args += ["--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "WARNING"]
    if db:
        args += ["--db", db]
    log = workdir / f"{label.replace(' ', '_')}.log"
    with log.open("wb") as out:
        env = {**os.environ, "PYTHONPATH": src} if src else None
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    target = Target(label, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", proc, log)
    try:
        _wait_healthy(target, 60)
        yield target
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def reference(workdir: Path) -> Iterator[Target]:
    agl = AGL_VENV / "bin" / "agl"
    if not agl.exists():
        raise SystemExit(f"reference needs {agl}: run .ci/setup.d/40-agl-interop.sh")
    port = _free_port()
    log = workdir / "agl.log"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(agl),
                "store",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "WARNING",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    target = Target("agl store (reference)", f"http://127.0.0.1:{port}", None, proc, log)
    try:
        _wait_healthy(target, 180)
        yield target
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def private_postgres(workdir: Path) -> Iterator[str]:
    """A throw-away PostgreSQL cluster (as tests/fixtures/postgres.py starts for the tests)."""
    import glob
    import pwd

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("no PostgreSQL binaries; install Debian's postgresql or pass --pg-dsn")
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="lightspan-bench-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_owner: list[str] = []
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for p in (root, sock):
            os.chown(p, entry.pw_uid, entry.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(
        [*as_owner, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200"
    pg_ctl = [*as_owner, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-l", str(root / "log"), "-o", opts, "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- measurements


def _new_rollout(target: Target) -> tuple[str, str]:
    r = httpx.post(target.http + "/v1/agl/rollouts", json={"input": "bench"}, timeout=30)
    r.raise_for_status()
    body = r.json()
    return body["rollout_id"], body["attempt"]["attempt_id"]


async def _send_http(target: Target, batches: list[bytes], concurrency: int, progress) -> None:
    """POST the batches from ``concurrency`` threads, each on its own keep-alive connection of
    the standard library's ``http.client``: the sender shares the machine's 2 cores with the
    server, and httpx's pure-Python HTTP/1.1 cost ~3x more client CPU per request (the load
    generator should be the cheapest part of the measurement; the same one is used for every
    target, the reference included)."""
    queue: Queue[bytes] = Queue()
    for b in batches:
        queue.put_nowait(b)
    url = urlsplit(target.http)
    headers = {"content-type": "application/x-protobuf"}

    def worker() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
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
                    raise RuntimeError(f"{target.label}: HTTP {r.status} {data[:200]!r}")
                resp = ExportTraceServiceResponse.FromString(data)
                if resp.partial_success.rejected_spans:
                    raise RuntimeError(f"{target.label}: {resp.partial_success.error_message}")
                progress()
        finally:
            conn.close()

    await asyncio.gather(*(asyncio.to_thread(worker) for _ in range(concurrency)))


async def _send_grpc(target: Target, batches: list[bytes], concurrency: int, progress) -> None:
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
                resp = await export(queue.get_nowait(), timeout=120)
                if resp.partial_success.rejected_spans:
                    raise RuntimeError(f"{target.label}: {resp.partial_success.error_message}")
                progress()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its descendants so far (Linux ``/proc``)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(x) for x in fields[11:15]) / tick  # utime stime cu cs
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in tree)


def ingest_rate(
    target: Target, transport: str, n_batches: int, concurrency: int, prog: Progress
) -> tuple[float, float]:
    """(spans/s, server CPU microseconds per span): the second is much less sensitive to what
    else the machine runs than the first."""
    rollout_id, attempt_id = _new_rollout(target)
    warm = [make_batch(rollout_id, attempt_id, -1 - i) for i in range(2)]
    batches = [make_batch(rollout_id, attempt_id, i) for i in range(n_batches)]
    task = prog.add_task(f"{target.label} {transport}", total=n_batches)
    send = _send_grpc if transport == "grpc" else _send_http
    asyncio.run(send(target, warm, 1, lambda: None))
    cpu0 = _cpu_seconds(target.proc.pid)
    t0 = time.perf_counter()
    asyncio.run(send(target, batches, concurrency, lambda: prog.advance(task)))
    elapsed = time.perf_counter() - t0
    cpu_us = (_cpu_seconds(target.proc.pid) - cpu0) / (n_batches * BATCH) * 1e6
    prog.update(
        task, description=f"{target.label} {transport}: {n_batches * BATCH / elapsed:,.0f} spans/s"
    )
    return n_batches * BATCH / elapsed, cpu_us


def query_latency_ms(target: Target, n_spans: int, repeats: int = 5) -> tuple[float, float]:
    """Median time to read back a rollout of ``n_spans`` spans over REST: (response received,
    response received and parsed into Python objects)."""
    rollout_id, attempt_id = _new_rollout(target)
    batches = [
        make_batch(rollout_id, attempt_id, i, min(BATCH, n_spans - i * BATCH))
        for i in range((n_spans + BATCH - 1) // BATCH)
    ]
    asyncio.run(_send_http(target, batches, 2, lambda: None))
    read, parsed = [], []
    with httpx.Client(timeout=120) as client:
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            r = client.get(target.http + "/v1/agl/spans", params={"rollout_id": rollout_id})
            body = r.content
            t1 = time.perf_counter()
            items = json.loads(body)["items"]
            t2 = time.perf_counter()
            read.append((t1 - t0) * 1000)
            parsed.append((t2 - t0) * 1000)
            if len(items) != n_spans:
                raise RuntimeError(f"{target.label}: read {len(items)} of {n_spans} spans")
    return statistics.median(read[1:]), statistics.median(parsed[1:])


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=100, help="batches of 512 per measurement")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent exporters")
    parser.add_argument("--pg-dsn", default=None, help="PostgreSQL DSN (default: private cluster)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="also measure the SQLite store of the lightspan sources in this directory (its "
        "src/), e.g. `git archive <commit> src | tar -x -C DIR`: before/after in one run",
    )
    args = parser.parse_args()

    rates: dict[tuple[str, str], float] = {}
    cpu: dict[tuple[str, str], float] = {}
    latency: dict[tuple[str, int], tuple[float, float]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="lightspan-bench-"))
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as prog:

        def measure(target: Target, transports: tuple[str, ...]) -> None:
            for transport in transports:
                rates[(target.label, transport)], cpu[(target.label, transport)] = ingest_rate(
                    target, transport, args.batches, args.concurrency, prog
                )
            for n in (1_000, 10_000):
                latency[(target.label, n)] = query_latency_ms(target, n)

        if not args.no_reference:
            with reference(workdir) as ref:
                measure(ref, ("http",))
        with ours("lightspan memory", "memory", None, workdir) as t:
            measure(t, ("grpc", "http"))
        with ours("lightspan sqlite", "sqlite", str(workdir / "bench.db"), workdir) as t:
            measure(t, ("grpc", "http"))
        if args.baseline_src:
            src = str(Path(args.baseline_src).resolve() / "src")
            label = "lightspan sqlite (baseline)"
            with ours(label, "sqlite", str(workdir / "baseline.db"), workdir, src) as t:
                measure(t, ("grpc", "http"))
        if not args.no_postgres:
            if args.pg_dsn:
                with ours("lightspan postgres", "postgres", args.pg_dsn, workdir) as t:
                    measure(t, ("grpc", "http"))
            else:
                with (
                    private_postgres(workdir) as dsn,
                    ours("lightspan postgres", "postgres", dsn, workdir) as t,
                ):
                    measure(t, ("grpc", "http"))
    shutil.rmtree(workdir, ignore_errors=True)

    ref_rate = rates.get(("agl store (reference)", "http"))
    table = Table(
        title=f"Span ingestion (batches of {BATCH}, {args.concurrency} concurrent exporters)"
    )
    for col in (
        "store",
        "transport",
        "spans/s",
        "vs reference",
        "server CPU us/span",
        "read 1k spans",
        "read 10k spans",
        "read+parse 10k",
    ):
        table.add_column(col, justify="right" if col not in ("store", "transport") else "left")
    for (label, transport), rate in rates.items():
        ratio = f"{rate / ref_rate:.1f}x" if ref_rate else "-"
        table.add_row(
            label,
            "OTLP/gRPC" if transport == "grpc" else "OTLP/HTTP",
            f"{rate:,.0f}",
            ratio,
            f"{cpu[(label, transport)]:.1f}",
            f"{latency[(label, 1_000)][0]:.0f} ms",
            f"{latency[(label, 10_000)][0]:.0f} ms",
            f"{latency[(label, 10_000)][1]:.0f} ms",
        )
    console.print(table)
    console.print(
        "server CPU us/span: CPU time of the server process (and its children) during the "
        "ingestion, per span; it shares the 2 cores with the client, so spans/s moves with the "
        "load while this moves much less"
    )
    if ref_rate:
        sqlite_best = max(v for (label, _), v in rates.items() if label == "lightspan sqlite")
        console.print(
            f"SQLite vs reference: {sqlite_best / ref_rate:.1f}x (goal >= 10x); 10k-span read "
            f"on SQLite: {latency[('lightspan sqlite', 10_000)][0]:.0f} ms (goal < 100 ms)"
        )


if __name__ == "__main__":
    main()
