"""Tracing off costs nothing: without configuration, or with it disabled, running workflows
imports no OpenTelemetry module at all (checked in a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    import lightspan
    from lightspan.config import parse_config
    from lightspan.engine import Workflow, fork, organizer_worker, sequence, task

    MODE = sys.argv[1]
    if MODE == "disabled":
        assert lightspan.configure(parse_config({"agentLightning": {"enabled": False}})) is None
    elif MODE == "default":
        assert lightspan.configure() is None  # no file, no variables: tracing is off

    async def ident(x):
        return x

    wf = Workflow(
        "wf",
        sequence(
            "s",
            task("a", ident),
            fork("f", [task("b", ident), task("c", lambda x: x)]),
            organizer_worker("ow", task("plan", lambda x: [1, 2]), task("w", ident)),
        ),
        evaluator=lambda i, o, e: 1.0,
    )
    for i in range(3):
        r = wf.run_sync(i)
        assert r.ok and r.rollout_id is None, r
    loaded = sorted(m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry."))
    print("LOADED", loaded)
    assert not loaded, loaded
    """
)


@pytest.mark.parametrize("mode", ["none", "default", "disabled"])
def test_disabled_tracing_imports_no_opentelemetry(tmp_path, mode):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIGHTSPAN_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), mode],
        env=env,
        cwd=tmp_path,  # no core-config.yaml here
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LOADED []" in proc.stdout


def test_enabled_configuration_does_import_and_trace(tmp_path):
    """The counterpart, so the test above cannot pass by accident; also: ``lightspan.configure``
    makes its provider global, so a task's spans made with the plain OpenTelemetry API nest
    under the task's span (from a worker thread) and carry the run's rollout ids."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIGHTSPAN_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    code = textwrap.dedent(
        """
        import lightspan
        from opentelemetry import trace
        from lightspan.config import parse_config
        from lightspan.engine import Workflow, task
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        def sync_user_code(x):
            with trace.get_tracer("app").start_as_current_span("app-span"):
                return x

        exp = InMemorySpanExporter()
        h = lightspan.configure(parse_config({"agentLightning": {"enabled": True}}), exporters=[exp])
        r = Workflow("wf", task("t", sync_user_code)).run_sync(1)
        h.shutdown()
        spans = {s.name: s for s in exp.get_finished_spans()}
        app, t = spans["app-span"], spans["task t"]
        assert app.parent.span_id == t.context.span_id, "app span is not a child of the task"
        assert app.attributes["agentlightning.rollout_id"] == r.rollout_id
        print("SPANS", sorted(spans))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SPANS ['app-span', 'invoke_workflow wf', 'task t']" in proc.stdout
