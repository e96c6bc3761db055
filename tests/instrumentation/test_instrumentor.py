"""The instrumentor: instrument/uninstrument, the entry points, ``opentelemetry-instrument``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lightspan.engine import Workflow, task
from lightspan.engine.events import listeners
from lightspan.instrumentation import WorkflowInstrumentor

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


async def test_instrument_and_uninstrument():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    inst = WorkflowInstrumentor()
    wf = Workflow("wf", task("t", lambda x: x))
    inst.instrument(tracer_provider=provider)
    try:
        assert inst.listener in listeners()
        assert (await wf.run(1)).ok
        assert len(exporter.get_finished_spans()) == 2
    finally:
        listener = inst.listener
        inst.uninstrument()
    assert listener not in listeners() and inst.listener is None
    r = await wf.run(2)
    assert r.ok and r.rollout_id is None  # untraced runs get no ids and no spans
    assert len(exporter.get_finished_spans()) == 2


def test_entry_points_load():
    (ep,) = entry_points(group="opentelemetry_instrumentor", name="lightspan")
    assert ep.load() is WorkflowInstrumentor
    (sp,) = entry_points(group="opentelemetry_traces_sampler", name="lightspan_rollout")
    assert "ratio=0.5" in sp.load()("0.5").get_description()


SCRIPT = textwrap.dedent(
    """
    from lightspan.engine import Workflow, sequence, task

    async def hello(x):
        return f"hello {x}"

    wf = Workflow("tiny", sequence("s", task("hello", hello)))
    print("RESULT", wf.run_sync("prod").output)
    print("RESULT", wf.run_sync("train", rollout_id="ro-0000000000aa", mode="train").output)
    """
)


def test_opentelemetry_instrument_discovers_and_traces_the_engine(tmp_path):
    """``opentelemetry-instrument`` with the console exporter and lightspan's sampler at ratio 0:
    the production run is sampled out, the runner's rollout is traced in full."""
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LIGHTSPAN_"))},
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "tiny-app",
        "OTEL_TRACES_SAMPLER": "lightspan_rollout",
        "OTEL_TRACES_SAMPLER_ARG": "0",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), str(BIN / "python"), str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("RESULT hello") == 2
    spans = _console_spans(proc.stdout)
    names = sorted(s["name"] for s in spans)
    assert names == ["invoke_workflow tiny", "sequence s", "task hello"], proc.stdout
    for s in spans:
        assert s["attributes"]["agentlightning.rollout_id"] == "ro-0000000000aa"
        assert s["resource"]["attributes"]["service.name"] == "tiny-app"


def _console_spans(stdout: str) -> list[dict]:
    """Parse the ConsoleSpanExporter's pretty-printed JSON objects out of the output."""
    spans, depth, buf = [], 0, []
    for line in stdout.splitlines():
        if depth == 0 and line.startswith("{"):
            buf = []
        if depth > 0 or line.startswith("{"):
            buf.append(line)
            depth += line.count("{") - line.count("}")
            if depth == 0:
                spans.append(json.loads("\n".join(buf)))
    return spans
