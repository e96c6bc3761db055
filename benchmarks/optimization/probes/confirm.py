"""Replay one candidate of a benchmark's trainer run on its val and train tasks, with real models.

Why: the cost search confirms a step's val winner on val and train pooled (docs/trainer.md),
and what it retires after a refusal decides which candidates are ever confirmed. To know what
a candidate the search never confirmed would have done, this runs the baseline and that
candidate on the same val + train tasks of the same split (the trainer's own ``split_tasks``
with its seed), on model servers started as the benchmark starts them (one request slot, no
prompt cache: the same request gets the same answer as in the trainer's run), and prints the
two lower bounds the search would compute (candidate - baseline; with ``--current``, the
candidate against that resource set too).

Usage::

    .venv/bin/python benchmarks/optimization/probes/confirm.py OUT/trainer/classification-sequence \\
        --candidate "plan: model=qwen2.5-coder-0.5b max_tokens=46"

``OUT`` is a ``run.py --out`` folder; the candidate is named by the label the trainer's report
gives it (``report.json`` ``candidates``), built with the search's own ``CostSearch.options``
from the baseline's train runs, so its caps are the search's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks.optimization.models import ModelPool

from lightspan.trainer.data import load_tasks, split_tasks
from lightspan.trainer.evaluation.evaluate import InProcessEvaluator
from lightspan.trainer.evaluation.stats import mean, paired_bootstrap_lower
from lightspan.trainer.resmap import llm_steps
from lightspan.trainer.search.cost import CostSearch, ModelOption, figures, step_calls

console = Console()


def _rewire(workflow: Path, catalog: list[dict], endpoints: dict[str, str], into: Path) -> None:
    """The run's workflow and catalog with this process's model servers' endpoints."""
    doc = yaml.safe_load(workflow.read_text())
    for llm in doc["resources"]["llms"].values():
        llm["endpoint"] = endpoints[llm["model"]]
    into.write_text(yaml.safe_dump(doc, sort_keys=False))
    for entry in catalog:
        entry["endpoint"] = endpoints[entry["model"]]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trainer_dir", type=Path, help="run.py's OUT/trainer/<family-shape>")
    parser.add_argument("--candidate", required=True, help="a label of the trainer's report")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    d: Path = args.trainer_dir
    report = json.loads((d / "report" / "report.json").read_text())
    catalog = yaml.safe_load((d / "catalog.yaml").read_text())
    prices = {c["model"]: c["price"] for c in catalog}
    split = split_tasks(load_tasks(d / "tasks.jsonl"), seed=report["seed"])
    console.print(f"split {split.sizes()} (seed {report['seed']}), delta {report['delta']}")
    with ModelPool(parallel=1, repeatable=True) as pool, tempfile.TemporaryDirectory() as tmp:
        endpoints = pool.ensure(c["model"] for c in catalog)
        wf_path = Path(tmp) / "workflow.yaml"
        _rewire(d / "workflow.yaml", catalog, endpoints, wf_path)
        ev = InProcessEvaluator(wf_path, prices=prices, concurrency=args.concurrency)
        wf = ev.load()
        base = (await wf.resources.get_resources()).to_dict()
        tasks = split.val + split.train
        with Progress(console=console) as bar:
            job = bar.add_task("baseline on val + train", total=len(tasks))
            base_runs = await ev.evaluate(base, tasks, progress=lambda n: bar.advance(job, n))
        search = CostSearch(
            ev,
            llm_steps(wf),
            catalog=[ModelOption(c["endpoint"], c["model"]) for c in catalog],
            price=lambda m: (prices[m]["input"], prices[m]["output"]) if m in prices else None,
            seed=report["seed"],
        )
        step = next(s for s in search.steps if args.candidate.startswith(f"{s.name}:"))
        n_val = len(split.val)
        calls, good = step_calls(step, base_runs[n_val:], base_runs[:n_val])
        options = dict(search.options(base, step, calls, good))
        if args.candidate not in options:
            raise SystemExit(f"no candidate {args.candidate!r}; the search had: {sorted(options)}")
        with Progress(console=console) as bar:
            job = bar.add_task("candidate on val + train", total=len(tasks))
            cand_runs = await ev.evaluate(
                options[args.candidate], tasks, progress=lambda n: bar.advance(job, n)
            )
    table = Table(title=f"{args.candidate}: val + train, real models")
    for col in ("arm", "tasks", "reward", "val reward", "cost/run (µUSD)", "lower bound"):
        table.add_column(col)
    lb = paired_bootstrap_lower(
        [r.reward for r in cand_runs], [r.reward for r in base_runs], seed=report["seed"]
    )
    for name, runs, bound in (("baseline", base_runs, ""), ("candidate", cand_runs, f"{lb:+.3f}")):
        reward, cost, _ = figures(runs)
        val_reward = mean([r.reward for r in runs[:n_val]])
        table.add_row(
            name, str(len(runs)), f"{reward:.2f}", f"{val_reward:.2f}", f"{cost * 1e6:.1f}", bound
        )
    console.print(table)
    held = lb >= -report["delta"]
    console.print(
        f"lower bound {lb:+.3f} {'>=' if held else '<'} -{report['delta']}: "
        f"{'holds' if held else 'refused'} (against the baseline; the search also "
        "needs it against the current set, the same here for the first step)"
    )


if __name__ == "__main__":
    asyncio.run(main())
