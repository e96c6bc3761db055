"""``lightspan runner serve WORKFLOW.yaml --store URL|in_memory --workers N``.

Why a CLI: in continuous mode a runner is a long-lived process next to the store (one per
machine or container), started and drained by the process supervisor: SIGTERM/SIGINT drain
(in-flight rollouts finish and report, nothing new is dequeued), a second signal cancels the
in-flight rollouts (reported failed, so the store's retry policy applies).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

__all__ = ["add_runner_commands", "run_serve"]


def add_runner_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``runner serve`` to a CLI's subparsers; the handler is ``args.func(args) -> int``."""
    runner = subparsers.add_parser("runner", help="serve a workflow's rollouts from a store")
    sub = runner.add_subparsers(dest="runner_command", required=True)
    p = sub.add_parser(
        "serve",
        help="run a workflow for every rollout queued in a LightningStore",
        description="Dequeue rollouts, run the workflow, report spans, reward and status.",
    )
    p.add_argument("workflow", help="path of the workflow YAML file")
    p.add_argument(
        "--store",
        default=os.environ.get("LIGHTSPAN_STORE_URL", "http://127.0.0.1:4747"),
        help="store server URL (ours or `agl store`), or in_memory (default: "
        "$LIGHTSPAN_STORE_URL or http://127.0.0.1:4747)",
    )
    p.add_argument("--token", default=os.environ.get("LIGHTSPAN_STORE_TOKEN"), help="bearer token")
    p.add_argument("--workers", type=int, default=1, help="concurrent rollouts (default 1)")
    p.add_argument("--worker-id-prefix", help="worker ids are <prefix>-<i>")
    p.add_argument(
        "--prefetch",
        type=int,
        help="at most this many rollouts claimed ahead of idle workers, only as many as one "
        "store round trip needs (default: --workers; 0: never)",
    )
    p.add_argument("--max-rollouts", type=int, help="stop after starting this many rollouts")
    p.add_argument(
        "--idle-exit", type=float, metavar="SECONDS", help="stop when nothing was queued this long"
    )
    p.add_argument("--poll-interval", type=float, default=0.2, help="seconds between empty polls")
    p.add_argument("--heartbeat-interval", type=float, default=10.0, help="update_worker period")
    p.add_argument("--resources-ttl", type=float, default=2.0, help="resources cache seconds")
    p.add_argument(
        "--expected-key", default="expected", help="the key of a flat input holding the expected"
    )
    p.add_argument(
        "--config", help="configuration file (default: $LIGHTSPAN_CONFIG or ./core-config.yaml)"
    )
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=run_serve)
    return runner


async def _serve(args: argparse.Namespace) -> dict[str, Any]:
    from lightspan.config import load_config
    from lightspan.engine import load_workflow
    from lightspan.runner.inputs import InputMapping
    from lightspan.runner.runner import WorkflowRunner

    cfg = load_config(args.config)
    wf = load_workflow(args.workflow, prices=cfg.llm.prices)
    if args.store in ("in_memory", "memory"):
        from lightspan.store.backends.factory import create_store

        store: Any = create_store("memory")
    else:
        from lightspan.store.api.client import LightningStoreClient

        store = LightningStoreClient(args.store, token=args.token)
    await store.start()
    runner = WorkflowRunner(
        wf,
        store,
        workers=args.workers,
        worker_id_prefix=args.worker_id_prefix,
        poll_interval=args.poll_interval,
        heartbeat_interval=args.heartbeat_interval,
        resources_ttl=args.resources_ttl,
        input_mapping=InputMapping(expected_key=args.expected_key),
        prefetch=args.prefetch,
    )
    try:
        stats = await runner.serve(
            max_rollouts=args.max_rollouts, idle_exit=args.idle_exit, handle_signals=True
        )
    finally:
        await wf.aclose()
        await store.close()
    return stats.as_dict()


def run_serve(args: argparse.Namespace) -> int:
    """Serve until drained; prints the runner's counters as JSON on stdout."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.workers < 1:
        print("lightspan runner serve: --workers must be >= 1", file=sys.stderr)
        return 2
    stats = asyncio.run(_serve(args))
    print(json.dumps(stats))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m lightspan.runner.cli serve ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        argv = ["runner", *argv]
    parser = argparse.ArgumentParser(prog="lightspan")
    add_runner_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
