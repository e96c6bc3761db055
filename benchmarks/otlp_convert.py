"""OTLP/protobuf -> stored span rows: the Rust converter against the Python one, side by side.

Both produce the same rows (``tests/store/test_native_intake.py`` checks byte equality); this
measures what each costs per span on the store's hot path, in one process, alternating the two
so machine noise hits both alike.

Workload: ``bench_common``'s realistic spans (Agent Lightning- and lightspan-shaped, many
rollouts) by default, ``--workload synthetic`` for the earlier one. The speed-up is computed
per round and reported as median (min-max).

Usage: ``.venv/bin/python benchmarks/otlp_convert.py [--batches 40] [--rounds 5]
[--workload realistic|synthetic] [--write-bodies DIR]`` (``--write-bodies``: two request bodies
as files for ``native/``'s ``bench_convert`` example, which times the Rust conversion alone).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import Attempt, workload
from lightspan.store.intake import convert as conversion
from lightspan.store.intake.convert import native_rows, python_rows
from lightspan.store.intake.span_row import SpanRow

BATCH = 512


def python_converter_rows(body: bytes) -> list[SpanRow]:
    return python_rows(body).rows


def rust_rows(body: bytes) -> list[SpanRow]:
    out = native_rows(body)
    assert out is not None, "the Rust converter handed the batch back"
    return out.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="batches of 512 spans per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workload", choices=("realistic", "synthetic"), default="realistic")
    parser.add_argument(
        "--write-bodies",
        metavar="DIR",
        type=Path,
        help="write the first two request bodies (realistic: an Agent Lightning-shaped one, then "
        "one of ours) as DIR/body0.bin, DIR/body1.bin for native/'s bench_convert, and exit",
    )
    args = parser.parse_args()
    console = Console()
    if args.write_bodies is not None:
        attempts = [Attempt(f"ro-{i:012x}", f"at-{i:08x}") for i in range(64)]
        args.write_bodies.mkdir(parents=True, exist_ok=True)
        for i, body in enumerate(workload(args.workload, attempts, 2, BATCH, seed=1)):
            (args.write_bodies / f"body{i}.bin").write_bytes(body)
            console.print(
                f"{args.write_bodies / f'body{i}.bin'}: {len(body):,} bytes, {BATCH} spans"
            )
        return
    if conversion._native_convert is None:
        console.print("the Rust module is not built (no cargo at install time): nothing to compare")
        sys.exit(1)
    attempts = [Attempt(f"ro-{i:012x}", f"at-{i:08x}") for i in range(64)]
    bodies = workload(args.workload, attempts, args.batches, BATCH, seed=1)
    n = len(bodies) * BATCH
    times: dict[str, list[float]] = {"python": [], "rust": []}
    with Progress(console=console) as prog:
        task = prog.add_task("converting", total=args.rounds * 2)
        for _ in range(args.rounds):
            for name, fn in (("python", python_converter_rows), ("rust", rust_rows)):
                t0 = time.perf_counter()
                for body in bodies:
                    fn(body)
                times[name].append((time.perf_counter() - t0) / n * 1e6)
                prog.advance(task)
    size = sum(len(b) for b in bodies) // n
    table = Table(title=f"OTLP body -> span rows ({n:,} {args.workload} spans, {size} bytes each)")
    for col in ("converter", "median us/span", "best us/span", "spans/s (median)"):
        table.add_column(col, justify="left" if col == "converter" else "right")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in ("python", "rust"):
        table.add_row(
            name, f"{med[name]:.2f}", f"{min(times[name]):.2f}", f"{1e6 / med[name]:,.0f}"
        )
    console.print(table)
    ratios = [p / r for p, r in zip(times["python"], times["rust"], strict=True)]
    console.print(
        f"Rust / Python speed-up per round: {statistics.median(ratios):.1f}x "
        f"({min(ratios):.1f}-{max(ratios):.1f}x), {len(ratios)} rounds"
    )


if __name__ == "__main__":
    main()
