"""``lightspan demo``: one real workflow, end to end, on embedded defaults.

What it shows: an organizer-worker step fans a batch of arithmetic questions out to workers;
each worker is a fork/join of two LLM tasks with different prompts and token budgets (a
concise answer and a step-by-step one); a reducer picks the answer, an evaluator scores the
batch. The model is real: a small model started locally (offline) unless ``--endpoint``
points elsewhere. With tracing on (the default), spans go to an in-process LightningStore and
the demo reports what the store holds: rollouts, spans, LLM calls, the reward.

Prices are illustrative (per million tokens) so that the cost column has meaning; a real
deployment puts its provider's prices in ``llm.prices``.
"""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import ExitStack
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lightspan.engine import (
    BaseListener,
    LLMResource,
    PriceTable,
    PromptTemplate,
    ResourceSet,
    RunResult,
    StepInfo,
    Workflow,
    add_listener,
    fork,
    llm_task,
    organizer_worker,
    remove_listener,
    task,
)

QUESTIONS: list[tuple[str, float]] = [
    ("What is 7 + 5?", 12),
    ("What is 9 times 3?", 27),
    ("A box holds 4 apples. How many apples are in 3 boxes?", 12),
    ("What is 20 minus 8?", 12),
    ("What is 15 divided by 3?", 5),
    ("Tom has 6 pens and buys 4 more. How many pens does he have?", 10),
    ("What is 2 + 2 + 2?", 6),
    ("What is 100 minus 1?", 99),
]

ILLUSTRATIVE_PRICES = {"input": 0.10, "output": 0.40}

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(text: str) -> float | None:
    """The answer a model gave: the number after 'Answer:' if present, else the last number."""
    tail = text.rsplit("Answer:", 1)[-1] if "Answer:" in text else text
    found = _NUMBER.findall(tail.replace(",", "")) or _NUMBER.findall(text.replace(",", ""))
    return float(found[-1]) if found else None


def plan(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The organizer: one work item per question."""
    return [{"question": q} for q in batch["questions"]]


def pick(answers: dict[str, str]) -> dict[str, Any]:
    """The join's reducer: prefer the step-by-step answer's number, else the concise one."""
    step = last_number(answers.get("stepwise", ""))
    concise = last_number(answers.get("concise", ""))
    return {"answer": step if step is not None else concise, "raw": answers}


def accuracy(batch: dict[str, Any], output: list[dict[str, Any]], expected: list[float]) -> float:
    """The evaluator: the share of questions answered right."""
    right = sum(1 for o, e in zip(output, expected, strict=True) if o["answer"] == e)
    return right / len(expected)


def build_workflow(endpoint: str, model: str) -> Workflow:
    resources = ResourceSet(
        "rs-demo-1",
        {
            "system": PromptTemplate(
                "You are a careful math assistant. Output only the solution, no code."
            ),
            "concise": PromptTemplate("{question}\nReply with only the number."),
            "stepwise": PromptTemplate(
                "{question}\nThink step by step, then finish with 'Answer: <number>'."
            ),
            "short": LLMResource(
                endpoint, model, sampling_parameters={"max_tokens": 16, "temperature": 0}
            ),
            "long": LLMResource(
                endpoint, model, sampling_parameters={"max_tokens": 160, "temperature": 0}
            ),
        },
    )
    worker = fork(
        "answer",
        [
            llm_task("concise", prompt="concise", llm="short", system="system"),
            llm_task("stepwise", prompt="stepwise", llm="long", system="system"),
        ],
        reducer=pick,
    )
    root = organizer_worker("solve-all", task("plan", plan), worker, concurrency=2)
    return Workflow(
        "arithmetic-batch",
        root,
        resources=resources,
        evaluator=accuracy,
        prices=PriceTable({model: ILLUSTRATIVE_PRICES}),
    )


class _Progress(BaseListener):
    """Advances a progress bar as workers finish (the engine's listener interface at work)."""

    def __init__(self, progress: Progress, task_id: Any) -> None:
        self.progress = progress
        self.task_id = task_id

    def on_step_end(self, step: StepInfo) -> None:
        if step.kind == "worker":
            self.progress.advance(self.task_id)


def _start_tracing(console: Console, save_to: str | None = None) -> Any:
    """Tracing into an in-process store; ``None`` (with a note) if that stage is missing."""
    try:
        from lightspan.demo_tracing import start_in_process_tracing
    except ImportError as e:
        console.print(f"[yellow]tracing not available in this build ({e}); running untraced[/]")
        return None
    return start_in_process_tracing(save_to)


def _num(value: Any) -> str:
    """A number as a person writes it: ``12`` rather than ``12.0``; ``-`` for no answer."""
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _usd(value: float) -> str:
    """A small dollar amount with enough digits to tell calls apart (``$0.0000122``)."""
    return f"${value:.7f}" if value < 0.01 else f"${value:.4f}"


def _header(console: Console, wf: Workflow, endpoint: str, model: str, n: int) -> None:
    console.print(
        f"workflow [bold]{wf.name}[/]: organizer-worker 'solve-all' (2 lanes) over {n} "
        "question(s); each worker is fork 'answer' of two LLM steps ('concise', max 16 tokens; "
        "'stepwise', max 160) and a reducer that picks the number; evaluator: share right. "
        "Source: src/lightspan/demo.py (the same workflow as YAML: examples/batch/batch.yaml)."
    )
    console.print(f"model [bold]{model}[/] at {endpoint}")


def _report(console: Console, result: RunResult, expected: list[float], wall: float) -> None:
    table = Table(title="Per-question results")
    for col in ("#", "question", "answer", "expected", "right"):
        table.add_column(col, overflow="fold")
    outputs = result.output or []
    for i, (out, exp) in enumerate(zip(outputs, expected, strict=False)):
        q = QUESTIONS[i][0]
        table.add_row(
            str(i), q, _num(out["answer"]), _num(exp), "yes" if out["answer"] == exp else "no"
        )
    console.print(table)

    calls = Table(title="LLM calls (cost in USD)")
    for col in ("step", "model", "in tok", "out tok", "cost", "s"):
        calls.add_column(
            col, justify="right" if col not in ("step", "model") else "left", overflow="fold"
        )
    for c in result.llm_calls:
        calls.add_row(
            c.step,
            c.model,
            str(c.input_tokens),
            str(c.output_tokens),
            _usd(c.cost),
            f"{c.latency_s:.2f}",
        )
    console.print(calls)

    summary = Table(title="Run", show_header=False)
    summary.add_column("what")
    summary.add_column("value", overflow="fold")
    rows = [
        ("status", result.status),
        ("reward", f"{result.reward:.2f}" if result.reward is not None else "-"),
        ("LLM calls", str(len(result.llm_calls))),
        ("tokens in / out", f"{result.input_tokens} / {result.output_tokens}"),
        ("cost", f"{_usd(result.cost)} (USD)"),
        ("wall time", f"{wall:.1f} s"),
        ("resources", result.resources_id or "-"),
    ]
    for what, value in rows:
        summary.add_row(what, value)
    console.print(summary)
    console.print(
        f"cost: USD, from illustrative prices (${ILLUSTRATIVE_PRICES['input']:.2f} input, "
        f"${ILLUSTRATIVE_PRICES['output']:.2f} output per million tokens) times the token "
        "counts the model server reported; put your provider's prices in llm.prices "
        "(docs/configuration.md#prices)."
    )
    if result.error is not None:
        console.print(f"[red]error: {result.error!r}[/]")


def _where_traces_went(console: Console, rollout_id: str | None, save_to: str | None) -> None:
    """Where the run's traces are and how to look at them (the store's dashboard, Jaeger).

    Commands and URLs go on lines of their own, never wrapped, so they can be copied."""
    rollout = rollout_id or "-"
    if save_to is not None:
        page = f"traces?rolloutId={rollout_id}" if rollout_id else "rollouts"
        console.print(
            f"traces: rollout {rollout} saved to {save_to} (a SQLite LightningStore); "
            "browse them with"
        )
        console.print(
            f"  [bold]lightspan store serve --dashboard --db {save_to}[/]", soft_wrap=True
        )
        console.print(f"and open http://127.0.0.1:4747/{page}", soft_wrap=True)
        return
    console.print(
        f"traces: rollout {rollout} in a LightningStore inside this process (gone when the "
        "demo exits). To browse a run's traces in the store's dashboard:"
    )
    console.print("  [bold]lightspan demo --save-traces demo-traces.db[/]", soft_wrap=True)
    console.print(
        "  [bold]lightspan store serve --dashboard --db demo-traces.db[/]", soft_wrap=True
    )
    console.print(
        "and open http://127.0.0.1:4747/. A store server, the Collector and Jaeger: "
        "docs/setup-guide.md."
    )


def run_demo(
    *,
    endpoint: str | None = None,
    model: str | None = None,
    questions: int = 4,
    trace: bool = True,
    local_model: str = "smollm2-135m",
    save_traces: str | None = None,
) -> int:
    console = Console()
    n = max(1, min(questions, len(QUESTIONS)))
    batch = {"questions": [q for q, _ in QUESTIONS[:n]]}
    expected = [a for _, a in QUESTIONS[:n]]
    with ExitStack() as stack:
        if endpoint is None:
            from lightspan.localllm.process import LocalModelProcess

            with console.status(f"starting local model {local_model} (fetched on first use)..."):
                server = LocalModelProcess(local_model, fetch_missing=True).start()
            stack.callback(server.stop)
            endpoint, model = server.base_url, server.model
        if model is None:
            console.print("[red]error: --model is required with --endpoint[/]")
            return 2
        tracing = _start_tracing(console, save_traces) if trace else None
        wf = build_workflow(endpoint, model)
        _header(console, wf, endpoint, model, n)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task_id = progress.add_task("questions answered", total=n)
            listener = _Progress(progress, task_id)
            add_listener(listener)
            t0 = time.perf_counter()
            try:
                result = asyncio.run(_run(wf, batch, expected))
            finally:
                remove_listener(listener)
            wall = time.perf_counter() - t0
        _report(console, result, expected, wall)
        if tracing is not None:
            tracing.report(console, result)
            tracing.shutdown()
            _where_traces_went(console, result.rollout_id, save_traces)
        else:
            console.print("traces: none (--no-trace)")
    return 0 if result.ok else 1


async def _run(wf: Workflow, batch: dict[str, Any], expected: list[float]) -> RunResult:
    try:
        return await wf.run(batch, expected=expected)
    finally:
        await wf.aclose()
