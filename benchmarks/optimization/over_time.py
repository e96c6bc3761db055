"""The "over time" scenario: production traffic -> training -> adoption, cost per run plotted.

    .venv/bin/python benchmarks/optimization/over_time.py [--runs-before 12] [--runs-after 12]

What a user's deployment does, end to end, on the real local models:

1. a store server (`lightspan store serve`, SQLite) and a "production process": one workflow
   (baseline configuration: every step on the strongest model) traced into the store with
   content capture on and switched to store resources with ``ResourcesProvider.attach``;
2. production traffic: runs with an expected value, which the store auto-registers as labeled
   rollouts (docs/runner.md "Production runs");
3. ``lightspan train profile`` (where cost goes) and the schedule, ``lightspan train schedule
   --once --tasks store --store URL -- --catalog ...`` (due at once in a fresh store: the cost
   search on those stored rollouts as store rollouts run by runners, the winner published only
   if it held on the trainer's own test split);
4. more production traffic in the same process, which adopts the published set within the
   provider's TTL without restart.

Writes ``over_time.md``, ``over_time.json`` and ``over_time.png`` (cost per run against run
number, coloured by the ``resources_id`` each run used) to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
import yaml
from benchmarks.optimization.models import ModelPool
from benchmarks.optimization.oracle import RunRecord, call_records
from benchmarks.optimization.prices import cpu_price_table, measured_prices
from benchmarks.optimization.report import markdown_table, percentile
from benchmarks.optimization.tasks import FAMILIES, Task, generate
from benchmarks.optimization.trainer_seam import price_pairs
from benchmarks.optimization.workflows import (
    SHAPES,
    StepChoice,
    uniform_config,
    write_workflow_file,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path.home() / ".cache" / "lightspan" / "optbench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_store(db: Path, log: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    """A real store server on 127.0.0.1 (SQLite); returns the process, its URL, gRPC port."""
    port, grpc_port = free_port(), free_port()
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "lightspan", "store", "serve", "--backend", "sqlite"),
                *("--db", str(db), "--port", str(port), "--grpc-port", str(grpc_port)),
            ],
            cwd=REPO,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the store server exited ({proc.returncode}); log: {log}")
        try:
            httpx.get(url + "/v1/agl/health", timeout=1)
            return proc, url, grpc_port
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the store server did not answer on {url} within 60 s; log: {log}")


async def production(
    wf: Any, tasks: Sequence[Task], phase: str, first: int, concurrency: int
) -> list[dict[str, Any]]:
    """Run ``tasks`` as production traffic (expected value given); one row per run."""
    sem = asyncio.Semaphore(concurrency)
    done: list[int] = []  # progress: runs finished

    async def one(i: int, t: Task) -> dict[str, Any]:
        async with sem:
            t0 = time.perf_counter()
            res = await wf.run(t.input, expected=t.expected)
            latency = time.perf_counter() - t0
        rec = RunRecord(
            task_id=t.id,
            config=str(res.resources_id),
            reward=float(res.reward or 0.0),
            status=res.status,
            latency_s=latency,
            calls=call_records(res),
        )
        done.append(i)
        print(
            f"{phase} training: run {len(done)}/{len(tasks)} reward {rec.reward:.2f}, "
            f"{latency:.1f} s, resources {rec.config}",
            flush=True,
        )
        return {"run": first + i, "phase": phase, "end": time.time(), **asdict(rec)}

    return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(tasks))))


def summarize(rows: list[dict[str, Any]], cpu: Any) -> list[list[str]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["phase"], r["config"]), []).append(r)
    out = []
    for (phase, rid), rs in groups.items():
        costs = [RunRecord(**_rec(r)).cost(cpu) for r in rs]
        out.append(
            [
                phase,
                rid,
                str(len(rs)),
                f"{statistics.fmean(r['reward'] for r in rs):.2f}",
                f"{statistics.fmean(costs) * 1e6:.1f}",
                f"{percentile([r['latency_s'] for r in rs], 50):.1f}",
                f"{statistics.fmean(sum(c['output_tokens'] for c in r['calls']) for r in rs):.0f}",
            ]
        )
    return out


def _rec(row: dict[str, Any]) -> dict[str, Any]:
    keys = RunRecord.__dataclass_fields__
    return {k: v for k, v in row.items() if k in keys}


def plot(rows: list[dict[str, Any]], cpu: Any, trained_at: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for rid in dict.fromkeys(r["config"] for r in rows):
        rs = [r for r in rows if r["config"] == rid]
        ax.scatter(
            [r["run"] for r in rs],
            [RunRecord(**_rec(r)).cost(cpu) * 1e6 for r in rs],
            label=rid,
            s=18,
        )
    ax.axvline(
        trained_at - 0.5, color="grey", linestyle="--", label="lightspan train schedule --once"
    )
    ax.set_xlabel("production run (in order)")
    ax.set_ylabel("cost per run, µUSD (CPU table)")
    ax.set_title("cost per production run, before and after training")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="classification", choices=list(FAMILIES))
    p.add_argument("--shape", default="sequence", choices=list(SHAPES))
    p.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b", help="weakest first")
    p.add_argument("--max-tokens", type=int, default=48, help="the baseline's max_tokens")
    p.add_argument("--runs-before", type=int, default=12, help="production runs before training")
    p.add_argument("--runs-after", type=int, default=12, help="production runs after it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=2, help="production runs in flight")
    p.add_argument("--out", type=Path, help="default benchmarks/optimization/out/over-time-<UTC>")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="price measurements")
    p.add_argument(
        "--slots",
        type=int,
        default=1,
        help="request slots per model server (default 1: repeatable temperature-0 answers, "
        "as run.py; more slots batch concurrent requests and change answers)",
    )
    p.add_argument(
        "--min-tasks", type=int, default=2, help="the trainer's first successive-halving rung"
    )
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    started = dt.datetime.now(dt.UTC)
    out = args.out or Path(__file__).parent / "out" / started.strftime("over-time-%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)

    # Traffic before training: train/val tasks; after: held-out test tasks (never trained on).
    n_val = max(1, args.runs_before // 3)
    before = generate(args.family, "train", args.runs_before - n_val, seed=args.seed)
    before += generate(args.family, "val", n_val, seed=args.seed)
    after = generate(args.family, "test", args.runs_after, seed=args.seed)
    cpu = cpu_price_table(measured_prices(models, args.cache_dir / "prices.json"))
    prices = price_pairs(cpu, models)

    store_proc, url, grpc_port = start_store(out / "store.db", out / "store.log")
    try:
        with ModelPool(
            threads=1, parallel=args.slots, repeatable=args.slots == 1, log_dir=out
        ) as pool:
            endpoints = pool.ensure(models)
            baseline = uniform_config(args.shape, StepChoice(models[-1], args.max_tokens))
            wf_file = write_workflow_file(
                out / "workflow.yaml", args.family, args.shape, baseline, endpoints
            )
            (out / "catalog.yaml").write_text(
                yaml.safe_dump(
                    [
                        {
                            "endpoint": endpoints[m],
                            "model": m,
                            "price": dict(zip(("input", "output"), prices[m], strict=True)),
                        }
                        for m in models
                    ]
                )
            )
            cfg_file = out / "lightspan.yaml"
            cfg_file.write_text(
                yaml.safe_dump(
                    {
                        "agentLightning": {
                            "enabled": True,
                            "store": {
                                "type": "external",
                                "address": url,
                                "grpc_address": f"127.0.0.1:{grpc_port}",
                            },
                            "tracing": {"capture_content": True},
                            # The schedule: due at once in this fresh store.
                            "optimization": {"enabled": True, "training_interval": "daily"},
                        },
                        "llm": {
                            "prices": {
                                m: dict(zip(("input", "output"), prices[m], strict=True))
                                for m in models
                            }
                        },
                    }
                )
            )
            rows, train_report, profile = asyncio.run(
                scenario(args, wf_file, cfg_file, url, out, before, after)
            )
    finally:
        store_proc.terminate()
        store_proc.wait(30)

    trained_at = len(before)
    plot(rows, cpu, trained_at, out / "over_time.png")
    headers = ["phase", "resources_id", "runs", "reward", "cost/run µUSD", "p50 s", "out tok/run"]
    cmd = "python benchmarks/optimization/over_time.py " + " ".join(sys.argv[1:])
    lines = [
        "# Over time: production traffic -> lightspan train run -> adoption",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}; {os.cpu_count()} cores, shared "
        f"(load average at the end {os.getloadavg()[0]:.1f}); command: `{cmd}`",
        f"- workflow: {args.family} x {args.shape}, baseline every step on {models[-1]} "
        f"max_tokens {args.max_tokens}; catalog: {', '.join(models)}; costs: CPU price table",
        f"- trainer: status {train_report.get('status')}; decision: {train_report.get('decision')}"
        f"; published: {train_report.get('published')}; its own spend: "
        f"{(train_report.get('trainer_spend') or {}).get('rollouts')} rollouts",
        "",
        markdown_table(headers, summarize(rows, cpu)),
        "",
        "![cost per run over time](over_time.png)",
        "",
        "## Where cost went before training (`lightspan train profile`)",
        "",
        "```",
        profile.strip(),
        "```",
        "",
    ]
    (out / "over_time.md").write_text("\n".join(lines))
    (out / "over_time.json").write_text(
        json.dumps({"runs": rows, "trainer": train_report}, indent=1, default=str)
    )
    print("\n".join(lines))
    print(f"report: {out / 'over_time.md'}")
    return 0


async def scenario(
    args: argparse.Namespace,
    wf_file: Path,
    cfg_file: Path,
    url: str,
    out: Path,
    before: list[Task],
    after: list[Task],
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    import lightspan
    from lightspan.config import load_config
    from lightspan.engine import load_workflow
    from lightspan.runner import ResourcesProvider
    from lightspan.store.api.client import LightningStoreClient

    cfg = load_config(str(cfg_file))
    handle = lightspan.configure(cfg)
    client = LightningStoreClient(url)
    wf = load_workflow(wf_file, prices=cfg.llm.prices)  # priced, as `lightspan run` does
    ResourcesProvider.attach(wf, client, ttl=2.0)
    rows = await production(wf, before, "before", 0, args.concurrency)
    (out / "runs-before.json").write_text(json.dumps(rows, indent=1))  # kept if a later step fails
    handle.force_flush()
    await asyncio.sleep(2)  # the store registers rollouts as the root spans arrive

    env = {**os.environ, "LIGHTSPAN_CONFIG": str(cfg_file), "COLUMNS": "160"}
    lightspan_cmd = [sys.executable, "-m", "lightspan"]
    profile = await _run(
        [*lightspan_cmd, "train", "profile", "--store", url, "--workflow", wf.name],
        env,
        out / "profile.log",
    )
    # The schedule, as a deployment runs it from cron: due at once (a fresh store), it runs the
    # cost search (the configuration's optimization.algorithm names only APO or VERL) and
    # publishes a winner that held on the trainer's test split.
    sched_cmd = [
        *(*lightspan_cmd, "train", "schedule", "--once", "--workflow", str(wf_file)),
        *("--tasks", "store", "--store", url, "--config", str(cfg_file)),
        *("--out", str(out / "train"), "--"),
        *("--algorithm", "cost", "--catalog", str(out / "catalog.yaml"), "--runners", "2"),
        *("--min-tasks", str(args.min_tasks), "--seed", str(args.seed)),
    ]
    print(f"training (lightspan train schedule --once): progress in {out / 'train.log'}")
    train_log = await _run(sched_cmd, env, out / "train.log")
    reports = sorted((out / "train").glob("*/report.json"))
    report = json.loads(reports[-1].read_text()) if reports else {"error": train_log[-2000:]}
    await asyncio.sleep(2.5)  # past the provider's TTL
    rows += await production(wf, after, "after", len(before), args.concurrency)
    handle.force_flush()
    handle.shutdown()
    await wf.aclose()
    return rows, report, profile


async def _run(cmd: list[str], env: dict[str, str], log: Path) -> str:
    """Run ``cmd``; its output goes to ``log`` as it comes (a trainer's progress lines can be
    followed there) and is returned."""
    with log.open("wb") as f:
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT
        )
        await proc.wait()
    return await asyncio.to_thread(log.read_text, errors="replace")


if __name__ == "__main__":
    raise SystemExit(main())
