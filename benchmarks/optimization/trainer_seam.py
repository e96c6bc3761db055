"""Where ``lightspan train run`` plugs into the benchmark.

Why a subprocess of the real CLI: the benchmark measures what a user gets from the command,
not an internal API. The trainer sees only train+val tasks (it splits them itself); its
winner (``resources`` in ``report.json``) is then run by the benchmark on the held-out test
split, next to the baseline and the oracle, measured the same way.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from benchmarks.optimization.tasks import Task
from benchmarks.optimization.workflows import Config, write_workflow_file

from lightspan.engine import LONG_INPUT, PriceTable

REPO = Path(__file__).resolve().parents[2]


def trainer_status() -> str | None:
    """None when ``lightspan train run`` is usable here, else why not."""
    if importlib.util.find_spec("lightspan.trainer") is None:
        return "the trainer stage (lightspan.trainer) is not installed on this branch"
    proc = subprocess.run(
        [sys.executable, "-m", "lightspan", "train", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if proc.returncode != 0:
        return f"`lightspan train run --help` failed: {(proc.stderr or proc.stdout)[-300:]}"
    return None


@dataclass(slots=True)
class TrainerJob:
    """A ``lightspan train run`` subprocess in flight (see :func:`start_trainer`).

    Why a job and not a blocking call: ``run.py --quick`` overlaps the trainer with the grid
    runs; the model servers batch the two streams of requests in their parallel slots, so
    the overlap uses the 2 cores better than running one after the other.
    """

    cmd: list[str]
    out: Path
    proc: subprocess.Popen[bytes]
    timeout_s: float

    def finish(self) -> dict[str, Any]:
        """Wait for the trainer; returns its ``report.json`` (raises if it wrote none)."""
        try:
            self.proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(
                f"`{' '.join(self.cmd[2:])}` was still running after {self.timeout_s:.0f} s "
                "(run.py --trainer-timeout) and was stopped"
            ) from None
        report_file = self.out / "report" / "report.json"
        if not report_file.exists():
            raise RuntimeError(
                f"`{' '.join(self.cmd[2:])}` exited with {self.proc.returncode} and wrote no "
                f"report.json (log: {self.out / 'trainer.log'})"
            )
        return json.loads(report_file.read_text())


def start_trainer(
    family: str,
    shape: str,
    baseline: Config,
    endpoints: Mapping[str, str],
    tasks: Sequence[Task],
    prices: Mapping[str, tuple[float, float]],
    out: Path,
    *,
    algorithm: str,
    seed: int,
    max_rollouts: int | None = None,
    runners: int = 2,
    min_tasks: int = 4,
    repeats: int = 1,
    timeout_s: float = 3 * 3600,
    optimizer_model: str | None = None,
    keep_model_first: bool = False,
    catalog_models: Sequence[str] | None = None,
    apo: Mapping[str, int] | None = None,
    vote_join: str = "all",
) -> TrainerJob:
    """Start ``lightspan train run`` on ``tasks`` in the background. ``optimizer_model``: the
    model (one of ``endpoints``) that writes APO's critiques and edits (``apo`` and ``both``;
    the strongest benchmarked model by default). ``catalog_models``: the models its catalog
    offers (:func:`trainer_catalog`). ``apo``: APO's beam options by their ``train run``
    names without dashes (``beam-rounds``, ``branch-factor``; the CLI's defaults otherwise).
    ``vote_join``: the join of the vote's workflow file the trainer optimizes."""
    out.mkdir(parents=True, exist_ok=True)
    wf = write_workflow_file(
        out / "workflow.yaml", family, shape, baseline, endpoints, vote_join=vote_join
    )
    task_file = out / "tasks.jsonl"
    task_file.write_text("".join(json.dumps(t.to_row()) + "\n" for t in tasks))
    catalog = out / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(trainer_catalog(endpoints, prices, catalog_models)))
    cmd = [
        sys.executable,
        "-m",
        "lightspan",
        "train",
        "run",
        *trainer_arguments(
            wf,
            task_file,
            out / "report",
            catalog,
            algorithm=algorithm,
            seed=seed,
            runners=runners,
            min_tasks=min_tasks,
            optimizer=(endpoints, optimizer_model or list(endpoints)[-1]),
            max_rollouts=max_rollouts,
            repeats=repeats,
            keep_model_first=keep_model_first,
            apo=apo,
        ),
    ]
    with (out / "trainer.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    return TrainerJob(cmd, out, proc, timeout_s)


def trainer_arguments(
    workflow: Path,
    task_file: Path,
    report_dir: Path,
    catalog: Path,
    *,
    algorithm: str,
    seed: int,
    runners: int,
    min_tasks: int,
    optimizer: tuple[Mapping[str, str], str],
    max_rollouts: int | None = None,
    repeats: int = 1,
    keep_model_first: bool = False,
    apo: Mapping[str, int] | None = None,
) -> list[str]:
    """The arguments of ``lightspan train run`` for one family x shape (:func:`start_trainer`).
    ``optimizer``: the served endpoints and the model among them that writes APO's critiques
    and edits (passed for ``apo`` and ``both`` only)."""
    args = [
        "--workflow",
        str(workflow),
        "--tasks",
        str(task_file),
        "--out",
        str(report_dir),
        "--catalog",
        str(catalog),
        "--algorithm",
        algorithm,
        "--seed",
        str(seed),
        "--in-process",
        "--runners",
        str(runners),
        "--min-tasks",
        str(min_tasks),
    ]
    if algorithm in ("apo", "both", "downshift"):
        endpoints, model = optimizer
        args += ["--optimizer-endpoint", endpoints[model], "--optimizer-model", model]
        for name, value in (apo or {}).items():
            args += [f"--{name}", str(value)]
    if max_rollouts:
        args += ["--max-rollouts", str(max_rollouts)]
    if repeats > 1:
        args += ["--repeats", str(repeats)]
    if keep_model_first:
        args.append("--keep-model-first")
    return args


def trainer_catalog(
    endpoints: Mapping[str, str],
    prices: Mapping[str, tuple[float, float]],
    models: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The ``--catalog`` entries the trainer may move steps to: every served model, or only
    ``models`` (with just the baseline's model the search changes caps and prompts and moves
    no step: on development tasks only the swaps changed answers, docs/performance.md 1c'; on
    the seeds' test splits caps and prompts did too, 1c'')."""
    chosen = list(endpoints) if models is None else [m for m in endpoints if m in models]
    missing = sorted(set(models or ()) - set(endpoints))
    if missing or not chosen:
        raise ValueError(f"trainer catalog: no served model {missing or list(models or ())}")
    return [
        {"endpoint": endpoints[m], "model": m, "price": {"input": p[0], "output": p[1]}}
        for m in chosen
        for p in [prices[m]]
    ]


def run_trainer(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`start_trainer`, then wait for its ``report.json``."""
    return start_trainer(*args, **kwargs).finish()


def resources_to_spec_section(resources: Mapping[str, Any], resources_id: str) -> dict[str, Any]:
    """A resources map (Agent Lightning shape) -> a workflow file's ``resources:`` section.

    The trainer may add per-step entries ``<name>@<step>``; in these workflows every resource
    serves one step, so such an entry replaces ``<name>`` (applied after the plain ones). A
    routed winner's long-input variants ``<name>@<step>|input>N`` become ``<name>|input>N``,
    which the engine applies per run (:meth:`lightspan.engine.ResourceSet.for_input`).
    """
    prompts: dict[str, Any] = {}
    llms: dict[str, Any] = {}
    ordered = sorted(resources.items(), key=lambda kv: "@" in kv[0].split(LONG_INPUT, 1)[0])
    for full_name, r in ordered:
        key, route, limit = full_name.partition(LONG_INPUT)
        name = key.split("@", 1)[0] + route + limit
        kind = r.get("resource_type")
        if kind == "prompt_template":
            prompts[name] = {"template": r["template"], "engine": r.get("engine", "f-string")}
        elif kind in ("llm", "proxy_llm"):
            llms[name] = {
                "endpoint": r["endpoint"],
                "model": r["model"],
                "sampling_parameters": dict(r.get("sampling_parameters") or {}),
            }
        else:
            raise ValueError(f"trainer resource {full_name!r}: unsupported resource_type {kind!r}")
    return {"id": resources_id, "prompts": prompts, "llms": llms}


def price_pairs(table: PriceTable, models: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Per model (input, output) USD per 1M tokens, as the trainer's catalog wants them."""
    out = {}
    for m in models:
        per_in, _ = table.cost(m, 1_000_000, 0)
        per_out, _ = table.cost(m, 0, 1_000_000)
        out[m] = (per_in, per_out)
    return out
