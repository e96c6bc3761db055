"""In-process export into the store: SDK spans handed by the exporter's sink to a SQLite store in
the same process (``store.type: in_memory`` deployments, and the runner's local delivery).

What it measures: the cost per span of ``InProcessSink.send`` (conversion and storing, commit
included), on spans recorded beforehand with the SDK (so recording is not counted): wall time
and this process's CPU time per span, median (min-max) over rounds, each round a fresh SQLite
store. The spans are shaped as the instrumentation writes LLM calls (owner ids and ~12
attributes on the span, a ~600-character prompt and completion), over 8 interleaved attempts.

It uses only the sink's public API, so the same script measures two versions of the code side
by side: run it with each checkout's interpreter, alternately, e.g.
``/work/main/.venv/bin/python benchmarks/inprocess_export.py`` then ``.venv/bin/python ...``.
``LIGHTSPAN_NATIVE_INTAKE=0`` measures the store's Python converter where the code uses one.

Usage: ``.venv/bin/python benchmarks/inprocess_export.py [--spans 10240] [--batch 512]
[--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lightspan.exporter.inprocess import InProcessSink

try:
    from lightspan.store.backends.sqlite import SqliteLightningStore
except ImportError:  # the code before the store's folders (issue 14), for before/after runs
    from lightspan.store.sqlite import SqliteLightningStore  # type: ignore[no-redef]

PROMPT = "You are a careful assistant. Solve the problem step by step. " * 10


def record(n: int) -> list:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("lightspan.bench", "0.1")
    for i in range(n):
        k = i % 8
        attrs = {
            "agentlightning.rollout_id": f"ro-{k:012x}",
            "agentlightning.attempt_id": f"at-{k:08x}",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "smollm2-135m",
            "gen_ai.request.temperature": 0.7,
            "gen_ai.request.max_tokens": 256,
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": PROMPT,
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": f"answer {i}: " + PROMPT[:200],
            "gen_ai.usage.input_tokens": 120 + k,
            "gen_ai.usage.output_tokens": 40 + k,
            "lightspan.step.kind": "llm",
            "lightspan.stop": ("\n", "END"),
        }
        with tracer.start_as_current_span("openai.chat.completion", attributes=attrs):
            pass
    spans = exporter.get_finished_spans()
    provider.shutdown()
    return list(spans)


def one_round(spans: list, batch: int, db: Path) -> tuple[float, float]:
    sink = InProcessSink(SqliteLightningStore(db), owns_store=True)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        stored = 0
        for i in range(0, len(spans), batch):
            n, _dup, rejected, message = sink.send(spans[i : i + batch], timeout=120)
            assert rejected == 0, message
            stored += n
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert stored == len(spans), stored
    finally:
        sink.close()
    return wall * 1e6 / len(spans), cpu * 1e6 / len(spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=10_240)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spans = record(args.spans)
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            w, c = one_round(spans, args.batch, Path(tmp) / f"r{r}.db")
            walls.append(w)
            cpus.append(c)

    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"

    native = os.environ.get("LIGHTSPAN_NATIVE_INTAKE", "1")
    print(f"in-process export -> SQLite, {args.spans} spans in batches of {args.batch}, ", end="")
    print(f"{args.rounds} rounds, LIGHTSPAN_NATIVE_INTAKE={native}")
    print("| us per span | median (min-max) |\n|---|---|")
    print(f"| wall | {fmt(walls)} |\n| CPU (this process) | {fmt(cpus)} |")


if __name__ == "__main__":
    main()
