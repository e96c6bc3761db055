"""What does APO's editor answer, and what does the trainer read from it? (issue 11)

    .venv/bin/python benchmarks/optimization/probes/apo_edits.py [--family extraction]
        [--shape organizer_worker] [--proposals 6] [--seed 99]

Why: in docs/performance.md 1o the trainer's APO (Qwen 1.5B as critic and editor) proposed six
edits of extraction x organizer_worker's worker prompt and the report said four "left it
unchanged" and one dropped ``{text}``, without showing what the editor wrote. This runs APO's
own ``propose`` on a development seed's train tasks (never a benchmark test task) with the
workflow on Qwen 1.5B and Qwen 1.5B as the optimizer, as ``run.py --algorithm apo`` sets it up,
records each raw editor answer, and prints how it is read: by ``clean_edit`` as the trainer
reads it now (the last block that differs from the template) and as it read it before (the
first block). The model server has one slot and no prompt cache (``determinism.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks.optimization.models import ModelPool
from benchmarks.optimization.probes.flips import LARGE
from benchmarks.optimization.tasks import generate
from benchmarks.optimization.workflows import (
    SHAPES,
    StepChoice,
    uniform_config,
    write_workflow_file,
)
from rich.console import Console
from rich.table import Table

from lightspan.trainer.data import Task
from lightspan.trainer.evaluation.evaluate import InProcessEvaluator
from lightspan.trainer.resmap import check_template_edit, prompt_names
from lightspan.trainer.search.apo import APOSearch, clean_edit
from lightspan.trainer.search.optimizer_llm import OptimizerLLM


class RecordingOptimizer:
    """The trainer's optimizer LLM, keeping every raw answer of the editor (the second call)."""

    def __init__(self, inner: OptimizerLLM) -> None:
        self.inner = inner
        self.edits: list[str] = []

    async def chat(self, prompt: str, *, temperature: float = 0.7) -> str:
        answer = await self.inner.chat(prompt, temperature=temperature)
        if "Feedback:" in prompt:
            self.edits.append(answer)
        return answer


def reading(answer: str, original: str, *, with_original: bool) -> str:
    """How the trainer reads one editor answer: the edit, unchanged, or rejected (why)."""
    edited = clean_edit(answer, original) if with_original else clean_edit(answer)
    why = check_template_edit(original, edited)
    if why is not None:
        return f"rejected: {why}"
    return "unchanged" if edited == original else f"edit: {edited!r}"


async def probe(args: argparse.Namespace, endpoint: str, console: Console) -> list[list[str]]:
    tasks = [
        Task(t.id, t.input, t.expected)
        for t in generate(args.family, "train", max(8, args.proposals * 4), seed=args.seed)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_workflow_file(
            Path(tmp) / "workflow.yaml",
            args.family,
            args.shape,
            uniform_config(args.shape, StepChoice(LARGE, 256)),
            {LARGE: endpoint},
        )
        ev = InProcessEvaluator(path, concurrency=1)
        base = (await ev.load().resources.get_resources()).to_dict()
        opt = RecordingOptimizer(OptimizerLLM(endpoint, LARGE))
        apo = APOSearch(ev, opt, seed=args.seed)
        names = prompt_names(base)
        rows = []
        for k in range(args.proposals):
            name = names[k % len(names)]
            batch = [tasks[(k * 4 + i) % len(tasks)] for i in range(4)]
            await apo.propose(base, name, batch)
            answer = opt.edits[-1]
            original = base[name]["template"]
            now = reading(answer, original, with_original=True)
            before = reading(answer, original, with_original=False)
            console.print(f"[bold]{k + 1}. {name}[/]: now {now}; before {before}")
            rows.append([str(k + 1), name, " ".join(answer.split())[:400], now, before])
        await opt.inner.aclose()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="extraction")
    ap.add_argument("--shape", default="organizer_worker", choices=SHAPES)
    ap.add_argument("--proposals", type=int, default=6)
    ap.add_argument("--seed", type=int, default=99, help="development seed (default 99)")
    args = ap.parse_args(argv)
    console = Console()
    with ModelPool(threads=1, parallel=1, repeatable=True) as pool:
        endpoint = pool.ensure([LARGE])[LARGE]
        rows = asyncio.run(probe(args, endpoint, console))
    table = Table(title=f"APO's editor on {args.family} x {args.shape} (Qwen 1.5B)")
    for h in ("#", "prompt", "the editor's answer", "read now", "read before"):
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
