"""What tracing costs a workflow step, against the stock OpenTelemetry SDK; and span loss.

Baselines (issue 15): the stock SDK as ``opentelemetry-instrument`` sets it up (what
``_OTelSDKConfigurator`` builds with the default ``OTEL_*`` settings: ``TracerProvider`` with
the default ``Resource`` and sampler, ``BatchSpanProcessor`` with its defaults, the OTLP/gRPC
``OTLPSpanExporter``), with each task opening one span itself, in its own asyncio task:

* ``stock SDK, bare span``: ``start_as_current_span("task tN")`` without attributes;
* ``stock SDK, step attributes``: the same span with the attributes our step span carries
  (``lightspan.step.kind``/``.name``, ``lightspan.branch.name``, the rollout and attempt ids).

Ours: exactly what ``lightspan.configure()`` builds (``configure_tracing``: our sampler, the
``NonBlockingBatchProcessor`` sized by the configuration's defaults, ``RolloutAttributesProcessor``
added by the instrumentor, the engine listener, and the exporter stage's store exporter sending
OTLP/gRPC to ``agentLightning.exporter.endpoint``).

All exporters send to the same OTLP/gRPC receiver in another process (``otlp_sink.py``), so the
process CPU measured here holds recording, queueing, encoding and sending, and none of the
receiving. A "recording only" block repeats the comparison with a discarding exporter on both
sides (no encoding, no network): the part the instrumentation itself controls.

Measure: per-step cost = process CPU time (all threads: the loop and the export thread) of a
1,000-task workflow (125 forks of width 8, zero work per task) run and flushed, minus the same
workflow untraced, divided by the spans the mode created (1,127 ours: root, sequence, forks,
tasks; 1,000 stock: one per task). Rounds: every mode runs ``reps`` times in shuffled order per
round (median per round); per-round differences "ours - stock" are reported as median
(min-max) over the rounds. The overhead at 1 ms / 10 ms of work per task is computed from the
per-step CPU cost (a wall-clock ratio cannot resolve 1 % on a shared machine).

Span loss: 100 concurrent workflows (3-deep nesting, 6 spans per run) through the SDK's
``BatchSpanProcessor`` and our ``NonBlockingBatchProcessor``, each at its own defaults and both
at equal queue sizes (2,048 and 65,536), with a real OTLP/gRPC exporter to a fast receiver and
to a slow one (250 ms per request); spans delivered are counted at the exporter (successful
exports only).

Run: ``.venv/bin/python benchmarks/tracing_overhead.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from rich.console import Console
from rich.table import Table

import lightspan
from lightspan.config import parse_config
from lightspan.engine import Workflow, fork, sequence, task
from lightspan.engine.events import add_listener, remove_listener
from lightspan.instrumentation.listener import SpanListener
from lightspan.instrumentation.processor import NonBlockingBatchProcessor

FORKS, WIDTH = 125, 8  # 1,000 tasks
TASKS = FORKS * WIDTH
OUR_SPANS = 1 + 1 + FORKS + TASKS
HERE = Path(__file__).resolve().parent


class CountingExporter(SpanExporter):
    """Wraps an exporter; counts the spans of successful exports (or discards, if ``None``)."""

    def __init__(self, inner: SpanExporter | None = None) -> None:
        self.inner = inner
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans) if self.inner is not None else SpanExportResult.SUCCESS
        if result is SpanExportResult.SUCCESS:
            self.spans += len(spans)
        return result

    def shutdown(self) -> None:
        if self.inner is not None:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@contextmanager
def sink(delay_ms: float = 0.0):
    """An OTLP/gRPC receiver in its own process; yields its ``host:port``."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "otlp_sink.py"), "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield f"127.0.0.1:{int(proc.stdout.readline())}"
    finally:
        proc.terminate()
        proc.wait(10)


def stock_exporter(endpoint: str | None) -> CountingExporter:
    """The SDK's OTLP/gRPC exporter (``OTEL_TRACES_EXPORTER=otlp``), or a discarding one."""
    if endpoint is None:
        return CountingExporter()
    return CountingExporter(OTLPSpanExporter(endpoint=endpoint, insecure=True))


def stock_sdk(endpoint: str | None, **bsp: Any) -> tuple[TracerProvider, CountingExporter]:
    """What ``opentelemetry-instrument`` builds: default resource and sampler, a
    ``BatchSpanProcessor`` (its defaults unless ``bsp`` says otherwise), the OTLP exporter."""
    exporter = stock_exporter(endpoint)
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(exporter, **bsp))
    return provider, exporter


def ours(endpoint: str | None, ratio: float = 1.0) -> tuple[Any, SpanListener, Any]:
    """``lightspan.configure()`` with the exporter endpoint set to the sink (or, for the
    recording-only block, a discarding exporter in place of the store exporter). The listener
    is taken off the engine again: the benchmark adds it for its own runs only."""
    exporter: dict[str, Any] = {"protocol": "grpc"}
    if endpoint is not None:
        exporter["endpoint"] = endpoint
    cfg = parse_config(
        {
            "agentLightning": {
                "enabled": True,
                "exporter": exporter,
                "tracing": {"sampling_ratio": ratio},
            }
        },
        environ={},
    )
    counting = CountingExporter() if endpoint is None else None
    handle = lightspan.configure(
        cfg, set_global=False, environ={}, exporters=[counting] if counting else None
    )
    listener = handle.instrumentor.listener
    remove_listener(listener)
    return handle, listener, counting


def big_workflow(tracer: Any = None, ids: dict[str, str] | None = None) -> Workflow:
    """125 forks of 8 zero-work tasks in a sequence; with ``tracer``, each task opens one span
    itself (with ``ids`` and the step attributes, when given)."""

    def make(name: str, branch: str):
        attrs = None
        if ids is not None:
            attrs = {
                "lightspan.step.kind": "task",
                "lightspan.step.name": name,
                "lightspan.branch.name": branch,
                **ids,
            }

        async def work(x: Any) -> Any:
            if tracer is not None:
                with tracer.start_as_current_span(f"task {name}", attributes=attrs):
                    pass
            return x

        return work

    forks = [
        fork(
            f"f{i}",
            [task(f"t{j}", make(f"t{j}", f"t{j}")) for j in range(WIDTH)],
            reducer=lambda d: 0,
        )
        for i in range(FORKS)
    ]
    return Workflow("bench", sequence("s", *forks))


async def timed(wf: Workflow, listener: SpanListener | None, flush: Any) -> float:
    """Process CPU seconds (every thread) of one run and the flush of what it produced."""
    if listener is not None:
        add_listener(listener)
    try:
        c0 = time.process_time()
        r = await wf.run(0)
        flush()
        dc = time.process_time() - c0
        assert r.ok, r.error
        return dc
    finally:
        if listener is not None:
            remove_listener(listener)


async def step_costs(endpoint: str, rounds: int, reps: int) -> dict[str, list[float]]:
    """Per-round per-span CPU microseconds of every mode (see the module doc)."""
    ids = {
        "agentlightning.rollout_id": "ro-0123456789ab",
        "agentlightning.attempt_id": "at-01234567",
    }
    stock_bare, exp_b = stock_sdk(endpoint)
    stock_attrs, exp_a = stock_sdk(endpoint)
    stock_rec, exp_r = stock_sdk(None)
    ours_otlp, l_otlp, _ = ours(endpoint)
    ours_rec, l_rec, _ = ours(None)
    ours_out, l_out, _ = ours(endpoint, ratio=0.0)
    plain = big_workflow()

    def fl(p: Any):
        return lambda: p.force_flush(60_000)

    modes: dict[str, tuple[Workflow, SpanListener | None, Any, int]] = {
        "off": (plain, None, lambda: None, 1),
        "OTLP: stock SDK, bare span": (
            big_workflow(stock_bare.get_tracer("bench")),
            None,
            fl(stock_bare),
            TASKS,
        ),
        "OTLP: stock SDK, step attributes": (
            big_workflow(stock_attrs.get_tracer("bench"), ids),
            None,
            fl(stock_attrs),
            TASKS,
        ),
        "OTLP: lightspan.configure()": (plain, l_otlp, fl(ours_otlp), OUR_SPANS),
        "lightspan.configure(), sampled-out run": (plain, l_out, fl(ours_out), OUR_SPANS),
        "recording only: stock SDK, step attributes": (
            big_workflow(stock_rec.get_tracer("bench"), ids),
            None,
            fl(stock_rec),
            TASKS,
        ),
        "recording only: lightspan.configure()": (plain, l_rec, fl(ours_rec), OUR_SPANS),
    }
    for wf, listener, flush, _ in modes.values():  # warm-up
        await timed(wf, listener, flush)
    out: dict[str, list[float]] = defaultdict(list)
    order, rng = list(modes), random.Random(7)
    for _ in range(rounds):
        rng.shuffle(order)
        cpu: dict[str, list[float]] = defaultdict(list)
        for _ in range(reps):
            for mode in order:
                wf, listener, flush, _ = modes[mode]
                cpu[mode].append(await timed(wf, listener, flush))
        off = statistics.median(cpu["off"])
        out["engine step, untraced"].append(off / (OUR_SPANS - 1) * 1e6)
        for mode, (_, _, _, spans) in modes.items():
            if mode != "off":
                out[mode].append((statistics.median(cpu[mode]) - off) / spans * 1e6)
    # Every recorded span reached its exporter (none dropped, which would flatter a mode).
    runs = 1 + rounds * reps
    assert exp_b.spans == exp_a.spans == exp_r.spans == runs * TASKS, (exp_b.spans, exp_a.spans)
    for handle in (ours_otlp, ours_rec):
        stats = handle.stats()
        assert stats.dropped == 0 and stats.exported == runs * OUR_SPANS, stats
    for p in (stock_bare, stock_attrs, stock_rec):
        p.shutdown()
    for handle in (ours_otlp, ours_rec, ours_out):
        handle.shutdown()
    return out


async def _load(provider: TracerProvider, clients: int, runs: int) -> float:
    listener = SpanListener(provider.get_tracer("bench"))

    async def leaf(x: Any) -> Any:
        await asyncio.sleep(0)
        return x

    wf = Workflow(
        "load", sequence("s", task("first", leaf), fork("f", [task("a", leaf), task("b", leaf)]))
    )

    async def client() -> None:
        for i in range(runs):
            await wf.run(i)

    add_listener(listener)
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - t0
    finally:
        remove_listener(listener)


def _processor(kind: str, exporter: SpanExporter, queue: int | None) -> SpanProcessor:
    if kind == "SDK BatchSpanProcessor":
        return BatchSpanProcessor(exporter, **({"max_queue_size": queue} if queue else {}))
    return NonBlockingBatchProcessor(exporter, **({"max_queue_size": queue} if queue else {}))


async def span_loss(endpoints: dict[str, str], runs: int) -> list[tuple[Any, ...]]:
    """Spans produced vs delivered (successful exports), 100 concurrent workflows."""
    rows = []
    for exp_name, endpoint in endpoints.items():
        for queue in (None, 2048, 65536):
            for kind in ("SDK BatchSpanProcessor", "lightspan NonBlockingBatchProcessor"):
                exporter = CountingExporter(OTLPSpanExporter(endpoint=endpoint, insecure=True))
                provider = TracerProvider(resource=Resource.create())
                provider.add_span_processor(_processor(kind, exporter, queue))
                t0 = time.perf_counter()
                dt = await _load(provider, 100, runs)
                provider.force_flush(300_000)
                total = time.perf_counter() - t0
                produced = 100 * runs * 6
                default = 2048 if kind.startswith("SDK") else 65536
                label = f"{queue or default:,}" + (" (default)" if queue is None else "")
                rows.append((exp_name, kind, label, produced, exporter.spans, dt, total))
                provider.shutdown()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (noisier)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--no-loss", action="store_true", help="skip the span-loss measurement")
    args = ap.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    reps = 2 if args.quick else 3
    console = Console(width=140)
    console.print(
        f"[bold]lightspan tracing overhead[/] (python {sys.version.split()[0]}); load average "
        f"before: {' / '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}"
    )
    with sink() as endpoint:
        costs = asyncio.run(step_costs(endpoint, rounds, reps))
    t = Table(
        title=f"Per-span CPU cost (us of process CPU, all threads, run + flush), median (min-max) "
        f"of {rounds} rounds"
    )
    for col in ("what", "us per span", "minus stock SDK span with step attributes, per round"):
        t.add_column(col, justify="left" if col == "what" else "right")

    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"

    base = {
        "OTLP": costs["OTLP: stock SDK, step attributes"],
        "recording only": costs["recording only: stock SDK, step attributes"],
    }
    for mode, values in costs.items():
        ref = base.get(mode.split(":")[0])
        diff = "-"
        if ref is not None and "lightspan" in mode:
            diff = fmt([a - b for a, b in zip(values, ref, strict=True)])
        t.add_row(mode, fmt(values), diff)
    console.print(t)
    spans_per_task = OUR_SPANS / TASKS
    for mode in ("OTLP: stock SDK, step attributes", "OTLP: lightspan.configure()"):
        per_task = statistics.median(costs[mode]) * (spans_per_task if "lightspan" in mode else 1)
        console.print(
            f"{mode}: {per_task:.1f} us of CPU per task = "
            + ", ".join(f"{per_task / (ms * 1000) * 100:.2f} % of a {ms} ms task" for ms in (1, 10))
        )
    if args.no_loss:
        return
    with sink() as fast, sink(250.0) as slow:
        rows = asyncio.run(
            span_loss(
                {"OTLP/gRPC, fast receiver": fast, "OTLP/gRPC, 250 ms per request": slow},
                15 if args.quick else 40,
            )
        )
    t = Table(
        title="Span loss, 100 concurrent workflows, 3-deep nesting (6 spans per run), "
        "real OTLP/gRPC exporter"
    )
    for col in ("receiver", "processor", "queue", "produced", "delivered", "lost", "workload s"):
        t.add_column(col, justify="right")
    t.add_column("+flush s", justify="right")
    for exp_name, kind, queue, produced, delivered, dt, total in rows:
        lost = 100 * (produced - delivered) / produced
        t.add_row(
            exp_name,
            kind,
            queue,
            str(produced),
            str(delivered),
            f"{lost:.1f} %",
            f"{dt:.2f}",
            f"{total:.2f}",
        )
    console.print(t)


if __name__ == "__main__":
    main()
