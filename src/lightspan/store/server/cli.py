"""``lightspan store serve``: command-line wiring for the store server.

Why separate from :mod:`.server`: the main CLI (``lightspan``) mounts these commands with
:func:`add_store_commands`, and ``python -m lightspan.store.server.app`` / ``python -m
lightspan.store.server.cli`` run them stand-alone; neither should import uvicorn just to print help.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_store_commands", "main", "run_serve"]

DEFAULT_SQLITE_DB = "./lightspan-store.db"


def _add_serve_arguments(p: argparse.ArgumentParser) -> None:
    from lightspan.store.intake.otlp_http import DEFAULT_MAX_REQUEST_BYTES

    p.add_argument(
        "--backend",
        choices=("sqlite", "memory", "postgres"),
        default="sqlite",
        help="where data lives (default: sqlite)",
    )
    p.add_argument(
        "--db",
        default=None,
        help=f"SQLite file (default {DEFAULT_SQLITE_DB}) or PostgreSQL DSN",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4747, help="REST + OTLP/HTTP port (default 4747)")
    p.add_argument(
        "--grpc-port",
        type=int,
        default=4317,
        help="OTLP/gRPC port (default 4317; -1 disables gRPC)",
    )
    tokens = p.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token",
        default=None,
        help="require this bearer token on REST and gRPC (default: $LIGHTSPAN_STORE_TOKEN); "
        "visible to other users in `ps`: prefer --token-file or the variable",
    )
    tokens.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="require the bearer token read from this file (surrounding whitespace ignored)",
    )
    p.add_argument(
        "--tls-cert",
        default=None,
        metavar="PEM",
        help="serve REST/OTLP-HTTP and OTLP/gRPC over TLS with this certificate (chain), PEM",
    )
    p.add_argument("--tls-key", default=None, metavar="PEM", help="the certificate's private key")
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="largest request body accepted on every endpoint (REST, OTLP/HTTP decompressed, "
        "OTLP/gRPC); larger ones get 413 / RESOURCE_EXHAUSTED "
        f"(default {DEFAULT_MAX_REQUEST_BYTES})",
    )
    p.add_argument(
        "--sqlite-synchronous",
        choices=("FULL", "NORMAL"),
        default=None,
        help="SQLite commit durability: FULL (default; survives power loss) or NORMAL "
        "(survives process crashes only; faster ingestion)",
    )
    p.add_argument(
        "--span-id-cache",
        type=int,
        default=None,
        metavar="N",
        help="sqlite/postgres: span ids kept in memory to find duplicate spans (default "
        "2,000,000, ~42 MB; 250,000 without the Rust extension); must hold the ids of every "
        "attempt receiving spans, or each batch re-reads its attempts from disk (ingestion "
        "measured 13-14x slower)",
    )
    p.add_argument(
        "--scan-interval",
        type=float,
        default=None,
        help="seconds between health scans for timed-out/unresponsive attempts",
    )
    p.add_argument(
        "--auto-rollout-timeout",
        type=float,
        default=None,
        help="seconds after which a rollout registered from its spans times out when its root "
        "span never ends (default 3600; 0: never)",
    )
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=10.0,
        help="seconds to let in-flight requests finish on shutdown (default 10)",
    )
    p.add_argument(
        "--dashboard",
        action="store_true",
        help="serve Agent Lightning's web dashboard at / (its 0.3.0 wheel is fetched once with "
        "pip, sha256-checked, and cached; with --token the browser signs in for read-only use)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages on ORIGIN (e.g. http://localhost:3000; '*' for any) to call "
        "the API; repeatable (default: no CORS headers)",
    )
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")
    p.add_argument("--log-level", default="INFO", help="log level (default INFO)")


def add_store_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``store serve`` to a CLI's subparsers; the handler is ``args.func(args) -> int``."""
    store = subparsers.add_parser("store", help="run the LightningStore server")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    serve = store_sub.add_parser(
        "serve",
        help="serve the LightningStore (REST /v1/agl, OTLP/HTTP /v1/traces, OTLP/gRPC)",
        description="Serve the LightningStore, wire-compatible with Agent Lightning v0.3.",
    )
    _add_serve_arguments(serve)
    serve.set_defaults(func=run_serve)
    return store


def read_token_file(path: str) -> str:
    """The token in ``path``; ``SystemExit`` naming the problem when unreadable or empty."""
    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"--token-file {path}: cannot read it: {exc}") from exc
    if not token:
        raise SystemExit(f"--token-file {path}: the file is empty")
    return token


def store_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``create_store`` options of ``store serve``'s flags; ``SystemExit`` naming the flag
    when one is wrong."""
    options: dict[str, Any] = {}
    if args.backend == "sqlite":
        options["db"] = args.db or DEFAULT_SQLITE_DB
        if args.sqlite_synchronous:
            options["synchronous"] = args.sqlite_synchronous
    elif args.backend == "postgres":
        dsn = args.db or os.environ.get("LIGHTSPAN_STORE_DSN")
        if not dsn:
            raise SystemExit("--backend postgres needs --db DSN (or $LIGHTSPAN_STORE_DSN)")
        options["db"] = dsn
    if args.span_id_cache is not None:
        if args.backend == "memory":
            raise SystemExit("--span-id-cache applies to --backend sqlite or postgres")
        if args.span_id_cache < 1:
            raise SystemExit(f"--span-id-cache must be a positive number, got {args.span_id_cache}")
        options["span_id_cache"] = args.span_id_cache
    if args.scan_interval is not None:
        options["scan_interval"] = args.scan_interval
    if args.auto_rollout_timeout is not None:
        options["auto_rollout_timeout"] = args.auto_rollout_timeout
    return options


async def _serve(args: argparse.Namespace) -> None:
    from lightspan.store.backends.factory import create_store
    from lightspan.store.server.app import StoreServer

    options = store_options(args)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("--tls-cert and --tls-key go together: give both, or neither")
    token = args.token
    if args.token_file:
        token = read_token_file(args.token_file)
    dashboard = None
    if args.dashboard:
        from lightspan.store.server.dashboard_fetch import prepare_dashboard

        dashboard = prepare_dashboard()  # None (logged why) when it cannot be fetched
    store = create_store(args.backend, **options)
    server = StoreServer(
        store,
        host=args.host,
        port=args.port,
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        token=token,
        max_request_bytes=args.max_request_bytes,
        graceful_timeout=args.graceful_timeout,
        access_log=args.access_log,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        dashboard=dashboard,
        cors_origins=args.cors_origin,
    )
    await server.serve_forever()


def run_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is in the store extra on Linux/macOS
        runner = asyncio.run
    try:
        runner(_serve(args))
    except OSError as exc:
        print(f"lightspan store serve: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m lightspan.store.server.cli store serve ...`` (or
    ``serve``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        argv = ["store", *argv]
    parser = argparse.ArgumentParser(prog="lightspan")
    add_store_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
