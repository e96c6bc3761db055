"""End-to-end span export: spans/s from the SDK into the LightningStore, and the workflow's cost.

Rows of the first table (each a fresh pipeline; spans/s = N spans / time from the first span's
start until the store holds all N):
  * SDK + processor only : spans discarded by the exporter: the ceiling set by recording spans
  * in-process        : SDK -> NonBlockingBatchProcessor -> LightningStoreSpanExporter ->
                        InMemoryLightningStore in this process (no protobuf)
  * OTLP/gRPC direct  : ... exporter -> OTLP/gRPC -> ``lightspan store serve`` (subprocess)
  * OTLP/HTTP direct  : the same over OTLP/HTTP
  * ack-only sink     : ... exporter -> OTLP/gRPC -> a Python sink that decodes and acknowledges
                        (the exporter's own ceiling, without the store's ingestion)
  * via Collector     : ... exporter -> OTLP/gRPC -> our Collector (collector-config/dev.yaml)
                        -> store server (and Jaeger, as in development); needs the built binaries
Spans are produced by a synchronous loop (N spans, 100 per rollout, 10 attributes each), so
the figure is the pipeline's, not the engine's.

Second table: the workflow-side cost of export. The same batch of engine workflows (fork/join of
no-op tasks, run concurrently) with tracing off, with tracing on and spans discarded (the
instrumentation's own cost: export off), and with tracing on into each target; wall time of
the batch, and the overhead per span against tracing off and against export off. Figures are +-30% on these 2-core machines
(../shared/performance-notes.md): compare rows within one run only.

Run:  .venv/bin/python benchmarks/export_pipeline.py [--spans 20000] [--backend memory|sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import TracerProvider
from rich.console import Console
from rich.table import Table

from lightspan.config import parse_config
from lightspan.engine import Workflow, fork, organizer_worker, sequence, task
from lightspan.exporter import exporter_from_config
from lightspan.instrumentation.processor import NonBlockingBatchProcessor
from lightspan.instrumentation.setup import configure_tracing

REPO = Path(__file__).resolve().parents[1]
OTELCOL = REPO / "collector-config" / "bin" / "lightspan-otelcol"
JAEGER = REPO / "collector-config" / "bin" / "jaeger"
SPANS_PER_ROLLOUT = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} not healthy after {timeout}s")


@contextmanager
def process(argv: list[str], env: dict[str, str], health: str, what: str) -> Iterator[None]:
    log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(health, proc, what)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def store_server(backend: str, tmp: Path) -> Iterator[tuple[str, str]]:
    """A store server; yields (REST address, gRPC host:port)."""
    port, gport = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "lightspan.store.server.cli",
        "serve",
        "--backend",
        backend,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--grpc-port",
        str(gport),
    ]
    if backend == "sqlite":
        argv += ["--db", str(tmp / f"bench-{port}.db")]
    address = f"http://127.0.0.1:{port}"
    with process(argv, {}, address + "/v1/agl/health", f"store server ({backend})"):
        yield address, f"127.0.0.1:{gport}"


@contextmanager
def collector(store_grpc: str) -> Iterator[str]:
    """Jaeger and our Collector (dev.yaml); yields the Collector's OTLP/gRPC host:port."""
    j = {k: f"127.0.0.1:{free_port()}" for k in ("GRPC", "HTTP", "QUERY_HTTP", "QUERY_GRPC")}
    jenv = {
        f"LIGHTSPAN_JAEGER_{'OTLP_' if k in ('GRPC', 'HTTP') else ''}{k}": v for k, v in j.items()
    }
    c = {k: f"127.0.0.1:{free_port()}" for k in ("GRPC", "HTTP", "HEALTH")}
    cenv = {f"LIGHTSPAN_OTELCOL_{k}": v for k, v in c.items()}
    cenv |= {
        "LIGHTSPAN_OTELCOL_METRICS_PORT": str(free_port()),
        "LIGHTSPAN_JAEGER_OTLP_GRPC": j["GRPC"],
        "LIGHTSPAN_STORE_OTLP_GRPC": store_grpc,
    }
    with ExitStack() as stack:
        stack.enter_context(
            process(
                [str(JAEGER), "--config", str(REPO / "collector-config/jaeger/jaeger.yaml")],
                jenv,
                f"http://{j['QUERY_HTTP']}/api/services",
                "jaeger",
            )
        )
        stack.enter_context(
            process(
                [str(OTELCOL), "--config", str(REPO / "collector-config/dev.yaml")],
                cenv,
                f"http://{c['HEALTH']}/",
                "collector",
            )
        )
        yield c["GRPC"]


SINK_CODE = """
import sys, time, grpc
from concurrent import futures
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest as Req
count = 0
def export(body, ctx):
    global count
    count += len(Req.FromString(body).resource_spans[0].scope_spans[0].spans) if body else 0
    return b""
def stats(body, ctx):
    return str(count).encode()
server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "opentelemetry.proto.collector.trace.v1.TraceService",
    {"Export": grpc.unary_unary_rpc_method_handler(export), "Count": grpc.unary_unary_rpc_method_handler(stats)}),))
server.add_insecure_port(sys.argv[1]); server.start(); print("ready", flush=True); server.wait_for_termination()
"""


@contextmanager
def ack_sink() -> Iterator[tuple[str, Callable[[], int]]]:
    """A Python OTLP/gRPC sink in a subprocess that decodes and acknowledges, storing nothing:
    the exporter's own ceiling, without the store's ingestion cost."""
    import grpc

    addr = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-c", SINK_CODE, addr], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    channel = grpc.insecure_channel(addr)
    count = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Count")
    try:
        yield addr, lambda: int(count(b"", timeout=5))
    finally:
        channel.close()
        proc.kill()
        proc.wait()


class NullExporter:
    """Discards spans: tracing on, export off (the baseline of the export cost)."""

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class CountingNull(NullExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Any) -> Any:
        self.count += len(spans)
        return super().export(spans)


def make_config(**al: Any):
    return parse_config({"agentLightning": {"enabled": True, **al}}, environ={})


def store_span_total(address: str) -> int:
    return int(httpx.get(address + "/v1/agl/statistics", timeout=10).json()["total_spans"])


def produce(provider: TracerProvider, n: int, tag: str) -> None:
    tracer = provider.get_tracer("bench")
    attrs = {f"bench.attr.{i}": f"value-{i}" for i in range(8)}
    for r in range(n // SPANS_PER_ROLLOUT):
        ids = {
            "agentlightning.rollout_id": f"ro-{tag}{r:08d}",
            "agentlightning.attempt_id": "at-bench001",
        }
        with tracer.start_as_current_span("root", attributes={**ids, **attrs}):
            for _ in range(SPANS_PER_ROLLOUT - 1):
                tracer.start_span("child", attributes={**ids, **attrs}).end()


def throughput(exporter: Any, n: int, tag: str, stored: Callable[[], int]) -> tuple[float, Any]:
    provider = TracerProvider()
    proc = NonBlockingBatchProcessor(exporter, max_export_batch_size=512, schedule_delay_ms=50)
    provider.add_span_processor(proc)
    base = stored()
    t0 = time.perf_counter()
    produce(provider, n, tag)
    assert proc.force_flush(120_000), "flush timed out"
    deadline = time.monotonic() + 120
    while stored() - base < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"{tag}: only {stored() - base} of {n} spans arrived")
        time.sleep(0.02)
    dt = time.perf_counter() - t0
    if proc.stats().dropped:
        raise SystemExit(f"{tag}: the processor dropped {proc.stats().dropped} spans")
    provider.shutdown()
    return n / dt, exporter


# -- workflow-side cost ------------------------------------------------------------------------


async def noop(x: Any) -> Any:
    return x


def batch_workflow() -> Workflow:
    item = sequence("item", task("prep", noop), fork("f", [task(f"b{j}", noop) for j in range(4)]))
    return Workflow(
        "bench",
        organizer_worker("ow", task("plan", lambda n: range(n)), item, concurrency=16),
        evaluator=lambda i, o, e: 1.0,
    )


def run_batch(runs: int, items: int) -> float:
    wf = batch_workflow()

    async def go() -> None:
        results = await asyncio.gather(*(wf.run(items) for _ in range(runs)))
        assert all(r.ok for r in results)

    t0 = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--backend", default="memory", choices=["memory", "sqlite"])
    parser.add_argument("--runs", type=int, default=40, help="workflows per batch (second table)")
    parser.add_argument("--items", type=int, default=25, help="work items per workflow")
    parser.add_argument("--repeat", type=int, default=2, help="repetitions (best is shown)")
    args = parser.parse_args()
    console = Console()
    n = args.spans
    tmp = Path(tempfile.mkdtemp(prefix="lightspan-bench-"))
    have_collector = os.access(OTELCOL, os.X_OK) and os.access(JAEGER, os.X_OK)
    rates: dict[str, list[float]] = {}
    targets: dict[str, str] = {}
    walls: dict[str, list[float]] = {}
    spans_per_batch: dict[str, int] = {}

    with ExitStack() as stack:
        address, grpc_addr = stack.enter_context(store_server(args.backend, tmp))
        sink_addr, sink_count = stack.enter_context(ack_sink())
        col_grpc = stack.enter_context(collector(grpc_addr)) if have_collector else None

        def remote_cfg(protocol: str, endpoint: str | None = None):
            exp: dict[str, Any] = {"protocol": protocol, "spool": {"path": str(tmp / "spool")}}
            if endpoint:
                exp["endpoint"] = endpoint
            store = {"type": "external", "address": address, "grpc_address": grpc_addr}
            return make_config(store=store, exporter=exp)

        mem_cfg = make_config(store={"type": "in_memory"})
        store_rows: list[tuple[str, Any, Callable[[], int] | None]] = [
            ("in-process (InMemoryLightningStore)", mem_cfg, None),
            (f"OTLP/gRPC direct -> store server ({args.backend})", remote_cfg("grpc"), None),
            (
                f"OTLP/HTTP direct -> store server ({args.backend})",
                remote_cfg("http/protobuf"),
                None,
            ),
            ("OTLP/gRPC -> ack-only sink (no store)", remote_cfg("grpc", sink_addr), sink_count),
        ]
        if col_grpc:
            store_rows.append(
                (
                    f"via Collector (dev.yaml) -> store server ({args.backend}) + Jaeger",
                    remote_cfg("grpc", col_grpc),
                    None,
                )
            )
        for rep in range(args.repeat):
            null = CountingNull()
            rate, _ = throughput(null, n, f"n{rep}", lambda null=null: null.count)
            rates.setdefault("SDK + processor only, spans discarded (ceiling)", []).append(rate)
            targets["SDK + processor only, spans discarded (ceiling)"] = "-"
            for label, cfg, counter in store_rows:
                e = exporter_from_config(cfg, environ={})
                if e.store is not None:
                    st = e.store

                    def total(e: Any = e, st: Any = st) -> int:
                        return int(e.call_store(st.statistics)["total_spans"])

                else:
                    total = counter or (lambda: store_span_total(address))
                rate, _ = throughput(e, n, f"r{rep}{len(rates.get(label, []))}{label[:3]}", total)
                rates.setdefault(label, []).append(rate)
                targets[label] = e.target.endpoint if e.target else "-"
                e.shutdown()

        # Workflow-side cost: the same batch with tracing off, on with a discarding exporter
        # (the instrumentation's own cost), and on into each target; interleaved repetitions.
        cost_rows: list[tuple[str, Any]] = [
            ("tracing off", None),
            ("tracing on, spans discarded (export off)", "null"),
            ("in-process store", mem_cfg),
            ("OTLP/gRPC -> store server", remote_cfg("grpc")),
        ]
        if col_grpc:
            cost_rows.append(("OTLP/gRPC -> Collector", remote_cfg("grpc", col_grpc)))
        run_batch(5, args.items)  # warm-up
        for _ in range(max(3, args.repeat)):
            for label, cfg in cost_rows:
                handle = None
                if cfg is not None:
                    exporter = (
                        NullExporter() if cfg == "null" else exporter_from_config(cfg, environ={})
                    )
                    handle = configure_tracing(
                        mem_cfg, exporters=[exporter], set_global=False, environ={}
                    )
                walls.setdefault(label, []).append(run_batch(args.runs, args.items))
                if handle is not None:
                    handle.force_flush(60_000)
                    st = handle.stats()
                    spans_per_batch[label] = st.received
                    if st.dropped or st.export_failed:
                        console.print(
                            f"[red]{label}: {st.dropped} dropped, {st.export_failed} failed"
                        )
                    handle.shutdown()

    table = Table(
        title=f"SDK -> LightningStore: {n:,} spans ({SPANS_PER_ROLLOUT} per rollout, "
        f"10 attributes), best of {args.repeat}"
    )
    table.add_column("path")
    table.add_column("spans/s", justify="right")
    table.add_column("target")
    for label, vals in rates.items():
        table.add_row(label, f"{max(vals):,.0f}", targets[label])
    if not have_collector:
        table.add_row("via Collector", "not run", "collector-config/bin binaries missing")
    console.print(table)

    off = min(walls["tracing off"])
    null = min(walls["tracing on, spans discarded (export off)"])
    t2 = Table(
        title=f"Workflow-side cost: {args.runs} concurrent workflows x {args.items} items "
        f"(fork/join of no-op tasks), best of {max(3, args.repeat)}"
    )
    for col in (
        "tracing",
        "batch wall s",
        "vs off",
        "spans",
        "µs/span vs off",
        "µs/span vs export off",
    ):
        t2.add_column(col, justify="left" if col == "tracing" else "right")
    for label, vals in walls.items():
        wall = min(vals)
        spans = spans_per_batch.get(label, 0)
        vs_off = f"{(wall - off) / spans * 1e6:.1f}" if spans else "-"
        vs_null = (
            f"{(wall - null) / spans * 1e6:.1f}"
            if spans and label != "tracing on, spans discarded (export off)"
            else "-"
        )
        t2.add_row(
            label,
            f"{wall:.3f}",
            f"{wall / off:.2f}x",
            f"{spans:,}" if spans else "-",
            vs_off,
            vs_null,
        )
    console.print(t2)
    console.print(
        "µs/span vs export off = the export's own cost to the workflow (the store or encoder "
        "shares the interpreter with the workflow; remote targets also share the 2 CPUs)."
    )


if __name__ == "__main__":
    main()
