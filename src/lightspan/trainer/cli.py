"""``lightspan train ...`` and ``lightspan eval``: the trainer's command line.

Why thin: every command parses its options, opens the store / evaluator, and calls one
function of the trainer package, so the same work is reachable from Python and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any


def _store_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--store", required=required, help="store server URL (http://host:4747) or 'in_memory'"
    )
    p.add_argument("--token", help="bearer token of the store server")


@asynccontextmanager
async def open_store(url: str, token: str | None = None):  # type: ignore[no-untyped-def]
    """An in-process memory store or a client of a store server (checked reachable)."""
    if url in ("in_memory", "memory"):
        from lightspan.store.backends.factory import open_store as _open

        store = await _open("memory")
    else:
        from lightspan.store.api.client import LightningStoreClient

        store = LightningStoreClient(url, token=token)
        try:
            await store.get_statistics()
        except Exception as e:
            await store.close()
            raise SystemExit(f"error: the store at {url} is unreachable: {e}") from None
    try:
        yield store
    finally:
        await store.close()


def _parse_since(value: str | None) -> float | None:
    """``--since``: seconds since the epoch, an ISO date, or a duration like 24h / 7d."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * units[value[-1]]
    try:
        return float(value)
    except ValueError:
        pass
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise SystemExit(
            f"error: --since {value!r}: use 24h, 7d, an ISO date or epoch seconds"
        ) from None


def _fraction(value: str) -> float:
    """A number from 0 to 1 (``--model-swap-below``); argparse names the option on error."""
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return f


def _err(message: object) -> None:
    """Errors go to stderr unwrapped (rich would wrap long paths)."""
    print(f"error: {message}", file=sys.stderr)


# -- profile -----------------------------------------------------------------------------------


def _cmd_profile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lightspan.trainer.traces.profile import profile_runs, render_profile
    from lightspan.trainer.traces.spans import collect_runs

    since = _parse_since(args.since)

    async def main() -> dict[str, Any]:
        async with open_store(args.store, args.token) as store:
            runs = await collect_runs(store, args.workflow, since=since)
        return profile_runs(runs)

    prof = asyncio.run(main())
    prof["workflow"] = args.workflow
    if args.json == "-":
        print(json.dumps(prof, indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(prof, indent=2))
    console = Console(stderr=args.json == "-")
    if prof["runs"] == 0:
        console.print(
            f"no stored runs of workflow {args.workflow!r}"
            + (f" since {args.since}" if args.since else "")
        )
        return 1
    console.print(render_profile(prof, args.workflow))
    for r in prof["rewards"]:
        rm = "-" if r["reward_mean"] is None else f"{r['reward_mean']:.3f}"
        console.print(
            f"resources {r['resources_id']}: {r['runs']} runs, reward {rm}, "
            f"failures {100 * r['failure_rate']:.1f}%"
        )
    return 0


# -- run / eval --------------------------------------------------------------------------------


def _catalog(path: str | None, cfg: Any) -> tuple[list[Any], dict[str, tuple[float, float]]]:
    """Models the cost search may choose: ``--catalog FILE`` (YAML list of {endpoint, model,
    api_key?, price: {input, output}?}); prices also come from ``llm.prices``."""
    import yaml

    from lightspan.trainer.search.cost import ModelOption

    prices = {m: (p.input, p.output) for m, p in cfg.llm.prices.items()}
    if not path:
        return [], prices
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise SystemExit(f"error: cannot read catalog {path}: {e.strerror}") from None
    items = raw.get("models") if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise SystemExit(f"error: catalog {path}: expected a list of {{endpoint, model}}")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, dict) or "endpoint" not in m or "model" not in m:
            raise SystemExit(f"error: catalog {path}[{i}]: needs 'endpoint' and 'model'")
        out.append(ModelOption(str(m["endpoint"]), str(m["model"]), m.get("api_key")))
        if isinstance(m.get("price"), dict):
            prices[str(m["model"])] = (float(m["price"]["input"]), float(m["price"]["output"]))
    return out, prices


def _progress():  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    )


class _ProgressLines:
    """Progress as a plain line every ``every`` seconds when stderr is not a terminal (a log
    file, a benchmark's subprocess): rich draws its bars only on a terminal, so a trainer
    writing to a file showed nothing until it ended (an hour, in the optimization benchmark)."""

    def __init__(self, bar: Any, every: float = 30.0) -> None:
        self.bar, self.every = bar, every
        self.on = not bar.console.is_terminal
        self.start = self.last = time.monotonic()

    def maybe_print(self) -> None:
        now = time.monotonic()
        if not self.on or now - self.last < self.every:
            return
        self.last = now
        done = ", ".join(f"{t.description} {t.completed:.0f}" for t in self.bar.tasks)
        print(f"[{now - self.start:6.0f} s] {done}", file=sys.stderr, flush=True)


@asynccontextmanager
async def _evaluator(args: argparse.Namespace, prices: dict[str, tuple[float, float]], cfg: Any):  # type: ignore[no-untyped-def]
    """The runs' executor: store rollouts + runners when the runner stage is installed and
    ``--store`` is given, else in-process runs."""
    from lightspan.trainer.evaluation.evaluate import InProcessEvaluator

    table = {m: {"input": i, "output": o} for m, (i, o) in prices.items()}
    store_url = getattr(args, "store", None)
    if store_url and not getattr(args, "in_process", False):
        try:
            from lightspan.trainer.evaluation.store_eval import StoreEvaluator
        except ImportError:
            StoreEvaluator = None  # type: ignore[assignment,misc]
        if StoreEvaluator is not None:
            async with open_store(store_url, getattr(args, "token", None)) as store:
                ev = StoreEvaluator(
                    args.workflow,
                    store,
                    prices=table,
                    runners=args.runners,
                    llm_timeout_seconds=cfg.llm.timeout_seconds,
                )
                try:
                    await ev.start()
                    yield ev, store
                finally:
                    await ev.aclose()
            return
    ev = InProcessEvaluator(
        args.workflow,
        prices=table,
        concurrency=max(1, args.runners),
        llm_timeout_seconds=cfg.llm.timeout_seconds,
    )
    if store_url:
        async with open_store(store_url, getattr(args, "token", None)) as store:
            yield ev, store
    else:
        yield ev, None


def _tasks(args: argparse.Namespace, workflow: str) -> list[Any]:
    """``--tasks FILE.jsonl``, or ``--tasks store``: labeled production runs in ``--store``."""
    from lightspan.trainer.data import TaskFileError, load_tasks

    if args.tasks != "store":
        return load_tasks(args.tasks)
    if not args.store or args.store in ("in_memory", "memory"):
        raise TaskFileError("--tasks store needs --store URL (the store holding the runs)")
    from lightspan.trainer.traces.spans import tasks_from_store

    async def fetch() -> list[Any]:
        async with open_store(args.store, args.token) as store:
            return await tasks_from_store(store, workflow)

    tasks = asyncio.run(fetch())
    if not tasks:
        raise TaskFileError(
            f"the store at {args.store} has no labeled runs of {workflow!r} (runs need "
            "tracing.capture_content and an expected value)"
        )
    return tasks


def _on_ctrl_c(ev: Any) -> None:
    """Ctrl-C: flag the evaluator (no new rollouts) and cancel the main task, which writes
    a partial report; nothing is published after the flag is set."""
    import signal

    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def handler() -> None:
        ev.interrupted = True
        if main_task is not None:
            main_task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, handler)


def _load_resources_file(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise SystemExit(f"error: cannot read resources file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: resources file {path} is not JSON: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("resources"), dict):
        data = data["resources"]  # a report.json or a ResourcesUpdate
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise SystemExit(f"error: {path}: expected an Agent Lightning resources map")
    return data


async def _baseline(workflow: Any) -> dict[str, Any]:
    rs = await workflow.resources.get_resources()
    return rs.to_dict()


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lightspan.config import load_config
    from lightspan.engine import load_workflow
    from lightspan.trainer.data import TaskFileError
    from lightspan.trainer.evaluation.evaluate import EvaluationError
    from lightspan.trainer.run import TrainOptions, train

    console = Console(stderr=True)
    cfg = load_config(args.config)
    algorithm = (args.algorithm or cfg.agentLightning.optimization.algorithm.value).lower()
    if algorithm == "verl":
        from lightspan.trainer.search.verl import verl_unavailable

        _err(verl_unavailable())
        return 2
    wf = load_workflow(args.workflow, prices=cfg.llm.prices)
    try:
        tasks = _tasks(args, wf.name)
    except TaskFileError as e:
        _err(e)
        return 2
    catalog, prices = _catalog(args.catalog, cfg)
    optimizer = None
    if algorithm in ("apo", "both", "downshift"):
        from lightspan.trainer.search.optimizer_llm import OptimizerLLM

        opt_model = args.optimizer_model or cfg.llm.model
        optimizer = OptimizerLLM(
            args.optimizer_endpoint or cfg.llm.endpoint,
            opt_model,
            api_key=cfg.llm.api_key,
            max_tokens=args.optimizer_max_tokens,
            price=prices.get(opt_model),
        )
    opts = TrainOptions(
        algorithm=algorithm,
        delta=args.delta,
        seed=args.seed,
        max_rollouts=args.max_rollouts,
        min_tasks=args.min_tasks,
        confirm_on_train=not args.no_train_confirmation,
        keep_model_first=args.keep_model_first,
        model_swap_below=args.model_swap_below,
        route=not args.no_route,
        cost_lambda=args.cost_lambda,
        apo={
            "beam_width": args.beam_width,
            "branch_factor": args.branch_factor,
            "beam_rounds": args.beam_rounds,
            "gradient_batch_size": args.gradient_batch_size,
            "val_batch_size": args.val_batch_size,
        },
    )

    async def main() -> dict[str, Any]:
        async with _evaluator(args, prices, cfg) as (ev, store):
            _on_ctrl_c(ev)
            if args.repeats < 1:
                raise SystemExit(f"error: --repeats {args.repeats}: at least 1 run per task")
            ev.repeats = args.repeats
            if optimizer is not None:
                optimizer.spend = ev.spend
                await optimizer.check()
            publish = None
            if args.publish:
                if store is None:
                    raise SystemExit("error: --publish needs --store")
                from lightspan.trainer.publishing.publish import publish as _publish

                async def publish(res: dict[str, Any]) -> str:  # type: ignore[no-redef]
                    return await _publish(store, wf.name, res)

            history = None
            if store is not None and args.store not in ("in_memory", "memory"):
                from lightspan.trainer.traces.spans import collect_runs

                stored = await collect_runs(store, wf.name, limit=args.history_runs)
                history = [r.result for r in stored if r.mode is None]
            with _progress() as bar:
                runs = bar.add_task("rollouts", total=None)
                cands = bar.add_task("candidates", total=None)
                log_lines = _ProgressLines(bar)

                def tick(kind: str, n: int) -> None:
                    bar.advance(runs if kind == "run" else cands, n)
                    log_lines.maybe_print()

                try:
                    return await train(
                        evaluator=ev,
                        workflow=wf,
                        baseline=await _baseline(wf),
                        tasks=tasks,
                        catalog=catalog,
                        price=prices.get,
                        options=opts,
                        out=Path(args.out),
                        optimizer=optimizer,
                        on_progress=tick,
                        publish=publish,
                        history=history,
                    )
                finally:
                    if optimizer is not None:
                        await optimizer.aclose()

    from lightspan.trainer.search.optimizer_llm import OptimizerUnavailable

    try:
        report = asyncio.run(main())
    except (EvaluationError, OptimizerUnavailable) as e:
        _err(e)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        _err("interrupted: see the partial report; nothing was published")
        return 130
    b, o = report.get("baseline") or {}, report.get("optimized") or {}
    console.print(f"status: {report['status']}; decision: {report.get('decision')}")
    if report.get("route"):
        console.print(f"route (the first fallback): {report['route']['why']}")
    if b and o:
        for k in (
            "reward_mean",
            "cost_per_run",
            "latency_p50_s",
            "latency_p95_s",
            "tokens_per_run",
        ):
            console.print(f"  {k:15} {b.get(k)!s:>24} -> {o.get(k)!s:>24}")
    console.print(
        f"report: {Path(args.out) / 'report.json'}"
        + (f"; published {report['published']}" if report.get("published") else "")
    )
    if report["status"] == "interrupted":
        _err("interrupted: partial report written; nothing was published")
        return 130
    return 0 if report["status"] == "completed" else 1


def _cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lightspan.config import load_config
    from lightspan.engine import load_workflow
    from lightspan.trainer.data import TaskFileError, load_tasks
    from lightspan.trainer.evaluation.evaluate import EvaluationError
    from lightspan.trainer.report import per_step, summarize

    console = Console(stderr=True)
    cfg = load_config(args.config)
    try:
        tasks = load_tasks(args.tasks)
    except TaskFileError as e:
        _err(e)
        return 2
    _, prices = _catalog(None, cfg)
    wf = load_workflow(args.workflow, prices=cfg.llm.prices)

    async def main() -> dict[str, Any]:
        async with _evaluator(args, prices, cfg) as (ev, _store):
            res = _load_resources_file(args.resources) if args.resources else await _baseline(wf)
            with _progress() as bar:
                t = bar.add_task("rollouts", total=len(tasks))
                results = await ev.evaluate(res, tasks, progress=lambda n: bar.advance(t, n))
            return {
                "workflow": wf.name,
                "tasks": len(tasks),
                **summarize(results),
                "steps": per_step(results),
                "resources": res,
                "trainer_spend": ev.spend.as_dict(),
                "per_task": [
                    {
                        "id": r.task_id,
                        "reward": r.reward,
                        "status": r.status,
                        "cost": r.cost,
                        "latency_s": r.latency_s,
                        "tokens": r.tokens,
                        "error": r.error,
                    }
                    for r in results
                ],
            }

    try:
        out = asyncio.run(main())
    except EvaluationError as e:
        _err(e)
        return 2
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    console.print(
        f"reward {out['reward_mean']:.3f} CI {out['reward_ci95']}, cost/run "
        f"{out['cost_per_run']:.6g}, p50 {out['latency_p50_s']:.2f}s, p95 "
        f"{out['latency_p95_s']:.2f}s, tokens/run {out['tokens_per_run']:.1f} -> "
        f"{args.out}"
    )
    return 0


# -- publish / rollback / history --------------------------------------------------------------


def _cmd_publish(args: argparse.Namespace) -> int:
    from lightspan.trainer.publishing.publish import PublishError, history, publish, rollback

    async def main() -> Any:
        async with open_store(args.store, args.token) as store:
            if args.train_command == "publish":
                return await publish(store, args.workflow, _load_resources_file(args.resources))
            if args.train_command == "rollback":
                return await rollback(store, args.workflow, args.to)
            return await history(store, args.workflow)

    try:
        out = asyncio.run(main())
    except PublishError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if isinstance(out, str):
        print(f"published {out}")
    else:
        for row in out:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["create_time"]))
            print(f"{row['resources_id']}\t{when} UTC")
        if not out:
            print(f"no published resources for {args.workflow!r}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lightspan.trainer.traces.export import export

    async def main() -> int:
        async with open_store(args.store, args.token) as store:
            return await export(
                store, args.workflow, args.format, Path(args.out), since=_parse_since(args.since)
            )

    n = asyncio.run(main())
    print(f"wrote {n} rows to {args.out}")
    return 0 if n else 1


def _cmd_verl(args: argparse.Namespace) -> int:
    from lightspan.trainer.search.verl import verl_unavailable

    msg = verl_unavailable()
    print(
        f"error: {msg}"
        if msg
        else "VERL prerequisites present: run agl's VERL trainer "
        "against this store (see docs/trainer.md)",
        file=sys.stderr,
    )
    return 2 if msg else 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    from lightspan.trainer.publishing.schedule import schedule_main

    return schedule_main(args)


# -- registration ------------------------------------------------------------------------------


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workflow", required=True, help="workflow YAML file")
    p.add_argument(
        "--tasks",
        required=True,
        help="JSONL {id, input, expected}, or 'store': labeled production runs in --store",
    )
    p.add_argument("--store", help="store URL or 'in_memory' (rollouts + runners)")
    p.add_argument("--token", help="bearer token of the store server")
    p.add_argument(
        "--runners",
        type=int,
        default=2,
        help="in-process runners (0: external `lightspan runner serve` processes)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the workflow in this process instead of as store rollouts",
    )
    p.add_argument("--config", help="configuration file (prices, default LLM)")


def _train_run_args(p: argparse.ArgumentParser) -> None:
    """The options of ``lightspan train run`` (also parsed by :func:`parse_run_args`)."""
    _run_args(p)
    p.add_argument(
        "--algorithm",
        choices=["apo", "cost", "both", "downshift", "verl"],
        help="default: optimization.algorithm",
    )
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--publish", action="store_true", help="publish a winner that held on test")
    p.add_argument("--catalog", help="YAML list of {endpoint, model, price} the search may use")
    p.add_argument("--delta", type=float, default=0.02, help="tolerated reward drop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-tasks", type=int, default=4, help="first successive-halving rung")
    p.add_argument("--max-rollouts", type=int, help="budget of search rollouts")
    p.add_argument(
        "--no-train-confirmation",
        action="store_true",
        help="cost: accept a step's winner on val alone (default: confirmed on val and train)",
    )
    p.add_argument(
        "--keep-model-first",
        action="store_true",
        help="cost: per step, try shorter caps and prompts on the step's own model first, "
        "other models only when none of those held and saved enough (fewer answers change)",
    )
    p.add_argument(
        "--model-swap-below",
        type=_fraction,
        default=0.10,
        metavar="FRACTION",
        help="with --keep-model-first: try the other models too when the step's own-model "
        "winner saved less than this fraction of the val cost (default 0.10; 0: never)",
    )
    p.add_argument(
        "--no-route",
        action="store_true",
        help="do not offer the winner with long inputs on the baseline as a fallback "
        "(the route is fitted on train and val: docs/trainer.md 'Routing long inputs')",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs per (candidate, task), rewards averaged (where the model's answers vary)",
    )
    p.add_argument(
        "--history-runs",
        type=int,
        default=200,
        help="newest stored production runs whose calls inform max_tokens (with --store URL)",
    )
    p.add_argument("--optimizer-endpoint", help="critic/editor endpoint (default: llm.endpoint)")
    p.add_argument("--optimizer-model", help="critic/editor model (default: llm.model)")
    p.add_argument("--optimizer-max-tokens", type=int, default=256)
    p.add_argument("--cost-lambda", type=float, default=0.0, help="apo: reward - lambda*cost")
    for name, default in (
        ("beam-width", 2),
        ("branch-factor", 2),
        ("beam-rounds", 2),
        ("gradient-batch-size", 4),
        ("val-batch-size", 8),
    ):
        p.add_argument(f"--{name}", type=int, default=default, help=f"apo (default {default})")


def parse_run_args(argv: list[str]) -> argparse.Namespace:
    """``lightspan train run ARGV`` as a namespace with every default filled in, for callers
    that start a run themselves (``train schedule``) without restating the defaults."""
    p = argparse.ArgumentParser(prog="lightspan train run")
    _train_run_args(p)
    return p.parse_args(argv)


def add_trainer_commands(sub: Any) -> None:
    """Add ``train`` (run, profile, publish, rollback, history, export, schedule, verl) and
    ``eval``."""
    train = sub.add_parser("train", help="optimize a workflow from its traces")
    tsub = train.add_subparsers(dest="train_command", metavar="COMMAND", required=True)

    p = tsub.add_parser("run", help="search cheaper/better resources and report")
    _train_run_args(p)
    p.set_defaults(func=_cmd_run)

    p = tsub.add_parser("profile", help="per step/model figures from stored spans")
    _store_arg(p)
    p.add_argument("--workflow", required=True, help="workflow name")
    p.add_argument("--since", help="24h, 7d, ISO date or epoch seconds")
    p.add_argument("--json", help="also write the figures as JSON to this file ('-': stdout)")
    p.set_defaults(func=_cmd_profile)

    p = tsub.add_parser("publish", help="publish a resources map as the next version")
    _store_arg(p)
    p.add_argument("--workflow", required=True, help="workflow name")
    p.add_argument("--resources", required=True, help="resources map JSON (or a report.json)")
    p.set_defaults(func=_cmd_publish)
    p = tsub.add_parser("rollback", help="republish an earlier version")
    _store_arg(p)
    p.add_argument("--workflow", required=True)
    p.add_argument("--to", help="resources id (default: the one before the latest)")
    p.set_defaults(func=_cmd_publish)
    p = tsub.add_parser("history", help="published versions of a workflow")
    _store_arg(p)
    p.add_argument("--workflow", required=True)
    p.set_defaults(func=_cmd_publish)

    p = tsub.add_parser("export", help="stored rollouts as fine-tuning data")
    _store_arg(p)
    p.add_argument("--workflow", required=True)
    p.add_argument("--format", choices=["sft-jsonl", "agl-triplets"], default="sft-jsonl")
    p.add_argument("--since")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_export)

    p = tsub.add_parser("verl", help="check VERL prerequisites")
    p.set_defaults(func=_cmd_verl)

    p = tsub.add_parser("schedule", help="train at optimization.training_interval")
    p.add_argument("--workflow", required=True)
    p.add_argument("--tasks", required=True)
    p.add_argument("--store", help="store URL (default: agentLightning.store.address)")
    p.add_argument("--token")
    p.add_argument("--out", default="lightspan-train", help="report directory root")
    p.add_argument("--once", action="store_true", help="run if due, then exit (for cron)")
    p.add_argument("--config")
    p.add_argument(
        "run_options",
        nargs=argparse.REMAINDER,
        metavar="-- TRAIN_RUN_OPTIONS",
        help="options of `lightspan train run` for each run, after `--` (e.g. "
        "-- --catalog models.yaml --min-tasks 2)",
    )
    p.set_defaults(func=_cmd_schedule)

    p = sub.add_parser("eval", help="figures of one resource set on tasks")
    _run_args(p)
    p.add_argument("--resources", help="resources map JSON (default: the workflow's own)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.set_defaults(func=_cmd_eval)
