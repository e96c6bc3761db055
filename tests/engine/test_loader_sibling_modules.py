"""A workflow file's Python steps may live next to it, whatever the current directory."""

from __future__ import annotations

from lightspan.engine import load_workflow


def test_module_next_to_the_workflow_file_is_importable(tmp_path, monkeypatch):
    d = tmp_path / "wfdir"
    d.mkdir()
    (d / "sibling_steps_for_loader_test.py").write_text("def double(x):\n    return 2 * x\n")
    (d / "wf.yaml").write_text(
        "workflow: w\nsteps:\n  - task: {name: d, call: sibling_steps_for_loader_test:double}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", ".")])
    result = load_workflow(d / "wf.yaml").run_sync(21)
    assert result.output == 42
