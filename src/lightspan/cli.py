"""The ``lightspan`` command: demo, workflows, configuration, local model, store, trainer.

Subcommands of other stages are added by their own ``add_*_commands(subparsers)`` functions,
imported lazily so that ``lightspan --help`` stays fast and a stage whose extra is not
installed only loses its own commands.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from lightspan import __version__

# (module, function) pairs that add a stage's subcommands when its extra is installed.
_STAGE_COMMANDS: list[tuple[str, str]] = [
    ("lightspan.localllm.cli", "add_llm_commands"),
    ("lightspan.store.server.cli", "add_store_commands"),
    ("lightspan.runner.cli", "add_runner_commands"),
    ("lightspan.trainer.cli", "add_trainer_commands"),
]


def _cmd_demo(args: argparse.Namespace) -> int:
    from lightspan.demo import run_demo

    return run_demo(
        endpoint=args.endpoint,
        model=args.model,
        questions=args.questions,
        trace=not args.no_trace,
        local_model=args.local_model,
        save_traces=args.save_traces,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    import yaml
    from rich.console import Console

    from lightspan.config import load_config
    from lightspan.engine import load_workflow

    console = Console()
    cfg = load_config(args.config)
    tracing: Any = None
    if cfg.agentLightning.enabled:
        import lightspan

        tracing = lightspan.configure(cfg)
    wf = load_workflow(args.workflow, prices=cfg.llm.prices)
    value: Any = yaml.safe_load(args.input) if args.input is not None else None
    expected: Any = yaml.safe_load(args.expected) if args.expected is not None else None
    try:
        result = wf.run_sync(value, expected=expected)
    finally:
        if tracing is not None:
            tracing.shutdown()  # flush: the spans are in the store (or spooled) when we return
    console.print_json(
        json.dumps(
            {
                "status": result.status,
                "output": result.output,
                "error": _error_text(result.error),
                "rollout_id": result.rollout_id,
                "reward": result.reward,
                "resources_id": result.resources_id,
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
                "cost": result.cost,
                "duration_s": round(result.duration_s, 4),
            },
            default=repr,
        )
    )
    unpriced = sorted({c.model for c in result.llm_calls if not c.priced})
    if unpriced:
        print(
            f"note: no price for {', '.join(unpriced)}: their calls cost 0 here; set llm.prices "
            "(USD per million tokens) in the configuration, see docs/configuration.md#prices",
            file=sys.stderr,
        )
    if tracing is not None:
        print(_trace_note(cfg, result.rollout_id, tracing), file=sys.stderr)
    return 0 if result.ok else 1


def _error_text(error: BaseException | None) -> str | None:
    """``Type: message`` of a failed run's error, with its cause (what a person reads)."""
    if error is None:
        return None
    text = f"{type(error).__name__}: {error}"
    cause = error.__cause__
    if cause is not None and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text


def _trace_note(cfg: Any, rollout_id: str | None, tracing: Any) -> str:
    """One line saying which rollout the run's spans were written as, and where they went."""
    if not rollout_id:
        return "traced: no rollout recorded (sampled out: see agentLightning.tracing)"
    store = cfg.agentLightning.store
    dropped = tracing.stats().dropped
    lost = f"; {dropped} span(s) dropped (queue full)" if dropped else ""
    if store.type == "in_memory":
        where = "the in-memory store of this process (gone when it exits; see docs/dev-mode.md)"
    else:
        target = cfg.agentLightning.exporter.endpoint or store.address
        where = f"{target} (undeliverable spans wait in the spool, see docs/troubleshooting.md)"
    return f"traced: rollout {rollout_id} -> {where}{lost}"


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from lightspan.config import load_config

    cfg = load_config(args.config)
    if args.config_command == "show":
        data = cfg.model_dump(mode="json")
        if data["agentLightning"]["store"].get("token"):
            data["agentLightning"]["store"]["token"] = "***"
        if data["llm"].get("api_key"):
            data["llm"]["api_key"] = "***"
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    else:
        print(f"configuration OK ({cfg.source})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightspan",
        description="Agent-workflow traces as training data for Agent Lightning.",
    )
    parser.add_argument("--version", action="version", version=f"lightspan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo (starts a local model if needed)",
        description="Run one real workflow end to end: an organizer-worker step fans arithmetic "
        "questions out to fork/join workers of two LLM calls each, on a small local model "
        "(started and fetched on first use) or on --endpoint. Prints the answers, the LLM "
        "calls with tokens and cost, the reward, and, with tracing on, what the in-process "
        "LightningStore recorded.",
    )
    p.add_argument("--endpoint", help="an OpenAI-compatible base URL (default: a local model)")
    p.add_argument("--model", help="the model name at --endpoint")
    p.add_argument(
        "--local-model", default="smollm2-135m", help="local model to start without --endpoint"
    )
    p.add_argument("--questions", type=int, default=4, help="how many questions (1-8)")
    p.add_argument("--no-trace", action="store_true", help="run without tracing")
    p.add_argument(
        "--save-traces",
        metavar="DB",
        help="keep the traces in this SQLite store file, to browse with "
        "`lightspan store serve --dashboard --db DB`",
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("run", help="run a workflow YAML file once")
    p.add_argument("workflow", help="path of the workflow file")
    p.add_argument("--input", help="the input, as YAML (e.g. '{question: 2+2}')")
    p.add_argument("--expected", help="the expected output, as YAML, for the evaluator")
    p.add_argument(
        "--config", help="configuration file (default: $LIGHTSPAN_CONFIG or ./core-config.yaml)"
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("config", help="validate or show the effective configuration")
    p.add_argument("config_command", choices=["validate", "show"])
    p.add_argument(
        "--config", help="configuration file (default: $LIGHTSPAN_CONFIG or ./core-config.yaml)"
    )
    p.set_defaults(func=_cmd_config)

    for module, func in _STAGE_COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            # The stage's extra is not installed (or the stage is not there): its commands
            # are simply absent. A broken import inside lightspan itself still raises.
            if e.name and (module.startswith(e.name) or not e.name.startswith("lightspan")):
                continue
            raise
        getattr(mod, func)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lightspan.config import ConfigError
    from lightspan.engine.errors import EngineError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, EngineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
