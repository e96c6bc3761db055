"""Runner throughput and overhead: lightspan's WorkflowRunner vs Agent Lightning's own runner.

Rows (each measured ``--rounds`` times, in interleaved passes over all rows so that the shared
machine's changing load reaches every row alike; median and range printed):

  * lightspan WorkflowRunner on an in-process store (memory, SQLite) and over HTTP on
    ``lightspan store serve`` (SQLite; the deployment comparable to the reference), 1 and 8
    workers (and 32 over HTTP), with a no-op workflow (one task that returns its input) and a
    3-step workflow (three LLM steps in sequence against a fake instant OpenAI-compatible
    server on 127.0.0.1);
  * the reference: Agent Lightning 0.3's ``LitAgentRunner`` (``OtelTracer``) against its own
    ``agl store`` server (in-memory, a fresh one per round, as lightspan's rows get a fresh
    database), the same two shapes (its 3-step agent makes the same three HTTP calls, each in
    an ``openai.chat.completion`` span), with one runner (r=1) and with eight runner processes
    (r=8, as ``agl.Trainer(n_runners=8)`` runs them: agl's runner does one rollout at a time,
    so this is the reference at the concurrency of lightspan's w=8 rows);
  * the same lightspan runner with ``share_requests=False`` ("unshared": each worker makes its
    own calls one at a time), no-op, SQLite in-process and over HTTP, and over HTTP with the
    v0.3 calls only ("v0.3-calls": as against ``agl store``, without our ``runner/exchange``
    extension), for comparison.

Worker counts: 1 (the overhead per rollout), 8 and 32 (throughput: enough concurrent calls to
fill the store's group commit and the runner's shared requests; over HTTP, more workers put
more reports and dequeues in each shared request). "calls/rollout" is
SQLite commits per rollout in-process (each an fsync with the default synchronous=FULL) and
HTTP requests per rollout over HTTP (counted by the client: httpx's transport plus its lean path).

rollouts/s = N rollouts / wall time from the runner's start until the N-th attempt is
reported (spans delivered, status set); the reference's from its runners' common start (after
their processes started) to the last one's end. N: 1,000 for lightspan's rows, 300 for the
reference's (about 3 s each way; at 200 the ramp-up and drain of 32 workers was a fifth of a
round's time). "overhead/rollout" is the 1-worker no-op figure:
wall time per rollout when the workflow itself does nothing, i.e. dequeue + resources + run
bookkeeping + spans + status. For the 3-step workflow, whose own three LLM calls through the
``openai`` SDK cost milliseconds of client CPU on either side, the "overhead ms" column is a
row's ms/rollout minus the workflow's alone (no runner, store or tracing) at the same
concurrency: "3step workflow alone w=N" rows for lightspan, "agl 3step agent alone r=1" (the
reference's agent's ``rollout_async`` called in a loop) for the reference. The reference goes over HTTP to its store server while the
"memory"/"sqlite" rows use an in-process store; "sqlite-server" is the like-for-like row.

Run:  .venv/bin/python benchmarks/runner.py [--rollouts 1000] [--reference-rollouts 300]
      [--rounds 3] [--no-reference] [--only TEXT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from lightspan.engine import LLMResource, PromptTemplate, ResourceSet, Workflow, llm_task, sequence
from lightspan.engine import task as task_step
from lightspan.runner import WorkflowRunner
from lightspan.store import EnqueueRolloutRequest
from lightspan.store.api.client import LightningStoreClient
from lightspan.store.backends.factory import open_store

HERE = Path(__file__).resolve().parent
AGL_VENV = Path(
    os.environ.get("LIGHTSPAN_AGL_VENV", Path.home() / ".cache/lightspan/agl-venv")
).expanduser()


# --------------------------------------------------------------------------- fake instant LLM


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        data = json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start_fake_llm() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def _serve_fake_llm(url_q: Any) -> None:
    _server, url = start_fake_llm()
    url_q.put(url)
    threading.Event().wait()


def start_fake_llm_process() -> tuple[multiprocessing.Process, str]:
    """The fake LLM server in a child process: the runner's process (lightspan's rows) and
    the reference's (its own process) both call it over HTTP without hosting it, as users'
    runners call an LLM server."""
    q: Any = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_serve_fake_llm, args=(q,), daemon=True)
    proc.start()
    return proc, q.get(timeout=30)


# --------------------------------------------------------------------------- lightspan rows


async def _noop(x: Any) -> Any:
    return x


def make_workflow(shape: str, llm_url: str) -> Workflow:
    if shape == "noop":
        # An async task, like the reference's agent (``async def rollout_async``): a synchronous
        # one would run in a thread (the engine keeps blocking code off the event loop), which
        # the reference does not pay (measured: ~0.1 ms and GIL hand-offs per rollout).
        return Workflow("bench-noop", task_step("noop", _noop), evaluator=lambda i, o, e: 1.0)
    res = ResourceSet(
        "rs-bench",
        {
            "default": LLMResource(endpoint=llm_url, model="fake"),
            "p": PromptTemplate("say {input}"),
        },
    )
    root = sequence("three", *(llm_task(f"s{i}", prompt="p") for i in range(3)))
    return Workflow("bench-3step", root, resources=res, evaluator=lambda i, o, e: 1.0)


class LightspanStoreServer:
    """``lightspan store serve`` (SQLite, a fresh database) on 127.0.0.1, for the HTTP rows."""

    def __init__(self, db: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lightspan.store.server.cli",
                "serve",
                "--backend",
                "sqlite",
                "--db",
                db,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--grpc-port",
                str(_free_port()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_healthy(self.url, self.proc, 60)

    def cpu_seconds(self) -> float:
        """The server process's CPU time so far (user + system, from /proc)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class CountingTransport(httpx.AsyncBaseTransport):
    """httpx's own transport (the client's pool limits), counting the requests it sends."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32)
        )
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def lightspan_round(
    backend: str,
    shape: str,
    workers: int,
    n: int,
    llm_url: str,
    shared: bool = True,
    extension: bool = True,
) -> tuple[float, float | None, tuple[float, float] | None]:
    """One round: enqueue ``n`` rollouts, then time the runner until all are reported.
    Returns the seconds, the store calls per rollout (SQLite commits in-process, HTTP
    requests to the server) and, over HTTP, the CPU ms per rollout of the runner's process
    (the fake LLM server runs in its own process) and of the store server's process."""
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.db")
        server = None
        transport = CountingTransport()
        if backend == "sqlite-server":
            server = LightspanStoreServer(db)
            store: Any = LightningStoreClient(server.url, transport=transport)
            if not extension:
                # as against a v0.3 server without our runner/exchange extension (agl store):
                # shared dequeues and span exports, one update_attempt per status
                store.exchange_supported = False
        elif backend == "memory":
            store = await open_store("memory")
        else:
            # "sqlite": the store's default, synchronous=FULL (every commit on disk before the
            # call returns); "sqlite-normal": synchronous=NORMAL (survives a process crash,
            # not a power loss), to show how much of the SQLite figure is fsync.
            sync = "NORMAL" if backend == "sqlite-normal" else "FULL"
            store = await open_store("sqlite", path=db, synchronous=sync)
        try:
            await store.enqueue_many_rollouts(
                [EnqueueRolloutRequest(input={"input": i}, mode="train") for i in range(n)]
            )
            wf = make_workflow(shape, llm_url)
            runner = WorkflowRunner(
                wf, store, workers=workers, poll_interval=0.01, share_requests=shared
            )
            commits0 = getattr(store, "write_commits", 0)
            requests0 = transport.requests + getattr(store, "lean_requests", 0)
            srv0 = server.cpu_seconds() if server is not None else 0.0
            t0, cpu0 = time.perf_counter(), time.process_time()
            stats = await runner.serve(max_rollouts=n)
            seconds = time.perf_counter() - t0
            cpu: tuple[float, float] | None = None
            if server is not None:
                cpu = (
                    (time.process_time() - cpu0) / n * 1000,
                    (server.cpu_seconds() - srv0) / n * 1000,
                )
            calls: float | None = None
            if backend == "sqlite-server":
                # httpx's requests plus the store client's lean ones (its exchange requests)
                calls = (transport.requests + store.lean_requests - requests0) / n
            elif backend != "memory":
                calls = (store.write_commits - commits0) / n
            done = await store.query_rollouts(status_in=["succeeded"])
            if len(done) != n:
                raise RuntimeError(f"{len(done)} of {n} rollouts succeeded: {stats.as_dict()}")
            await wf.aclose()
            return seconds, calls, cpu
        finally:
            await store.close()
            if server is not None:
                server.stop()


async def workflow_alone_round(
    shape: str, workers: int, n: int, llm_url: str
) -> tuple[float, float | None, tuple[float, float] | None]:
    """The workflow by itself: ``n`` runs, ``workers`` at a time, no runner, no store, no
    tracing. What a rollout costs before any runner adds to it (the 3-step workflow's three
    calls through the ``openai`` SDK): the runner's overhead is a row's ms/rollout minus this."""
    wf = make_workflow(shape, llm_url)
    sem = asyncio.Semaphore(workers)

    async def one(i: int) -> None:
        async with sem:
            (await wf.run({"input": i})).raise_for_status()

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    seconds = time.perf_counter() - t0
    cpu_ms = (time.process_time() - cpu0) / n * 1000
    await wf.aclose()
    return seconds, None, (cpu_ms, 0.0)


# --------------------------------------------------------------------------- reference rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"store server at {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v1/agl/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"store server at {url} did not become healthy in {timeout:.0f} s")


class AglStore:
    """``agl store`` (Agent Lightning's own server, in-memory) on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        self.proc = subprocess.Popen(
            [
                str(AGL_VENV / "bin" / "agl"),
                "store",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        _wait_healthy(self.url, self.proc, 120)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def reference_round(shape: str, n: int, llm_url: str, runners: int = 1) -> float:
    """One reference round on a fresh ``agl store`` with ``runners`` runner processes; the
    shape ``3step-alone``: the agent alone (no runner, no store)."""
    store = AglStore() if shape != "3step-alone" else None
    try:
        return _reference_round(store, shape, n, llm_url, runners)
    finally:
        if store is not None:
            store.stop()


def _reference_round(
    store: AglStore | None, shape: str, n: int, llm_url: str, runners: int
) -> float:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run(
        [
            str(AGL_VENV / "bin" / "python"),
            str(HERE / "agl_runner_reference.py"),
            store.url if store is not None else "-",
            str(n),
            shape,
            llm_url,
            str(runners),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reference failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


# --------------------------------------------------------------------------- table


def _row(
    name: str,
    n: int,
    times: list[float],
    calls: Sequence[float | None] = (),
    cpus: Sequence[tuple[float, float] | None] = (),
) -> dict[str, Any]:
    rates = sorted(n / t for t in times)
    cpu = [c for c in cpus if c is not None]
    per = sorted(t / n * 1000 for t in times)
    known = [c for c in calls if c is not None]
    return {
        "config": name,
        "calls": statistics.median(known) if known else None,
        "rate": statistics.median(rates),
        "rate_lo": rates[0],
        "rate_hi": rates[-1],
        "ms": statistics.median(per),
        "ms_lo": per[0],
        "ms_hi": per[-1],
        "cpu": (
            f"{statistics.median(c[0] for c in cpu):.2f} + {statistics.median(c[1] for c in cpu):.2f}"
            if cpu
            else "-"
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rollouts", type=int, default=1000)
    ap.add_argument("--reference-rollouts", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument(
        "--only", default="", help="run only the lightspan rows whose name contains this text"
    )
    args = ap.parse_args()
    llm_proc, llm_url = start_fake_llm_process()
    rows: list[dict[str, Any]] = []
    n = args.rollouts
    configs = [
        (shape, backend, workers, True, True)
        for shape in ("noop", "3step")
        for backend in ("memory", "sqlite", "sqlite-normal", "sqlite-server")
        for workers in ((1, 8, 32) if backend == "sqlite-server" else (1, 8))
    ]
    # The same runner with every worker making its own calls one at a time (no shared
    # dequeue, span export or overlapped report), for comparison.
    configs += [("noop", b, w, False, True) for b in ("sqlite", "sqlite-server") for w in (1, 8)]
    # Shared requests, but the v0.3 API only: what the runner does against ``agl store``,
    # which lacks our ``runner/exchange`` extension (dequeue, spans, status: three requests).
    configs += [(s, "sqlite-server", 8, True, False) for s in ("noop", "3step")]
    jobs: list[Job] = []
    for shape, backend, workers, shared, extension in configs:
        name = f"lightspan {shape} {backend} w={workers}" + ("" if shared else " unshared")
        name += "" if extension else " v0.3-calls"
        if args.only not in name:
            continue
        kind = "lightspan-http" if backend == "sqlite-server" else "lightspan"
        jobs.append(
            Job(
                name,
                n,
                lambda a=(backend, shape, workers, n, llm_url, shared, extension): asyncio.run(
                    lightspan_round(*a)
                ),
                kind,
                shape,
                workers,
            )
        )
    # The 3-step workflow by itself, at the runner rows' concurrencies: its own cost.
    for workers in (1, 8, 32):
        name = f"3step workflow alone w={workers}"
        if args.only in name or args.only in f"lightspan 3step sqlite-server w={workers}":
            jobs.append(
                Job(
                    name,
                    n,
                    lambda w=workers: asyncio.run(workflow_alone_round("3step", w, n, llm_url)),
                    "alone",
                    "3step",
                    workers,
                )
            )
    m = args.reference_rollouts
    if not args.no_reference:
        # r=8: eight runner processes, as agl.Trainer(n_runners=8) runs them (agl's runner does
        # one rollout at a time): the reference at the concurrency of lightspan's w=8 rows.
        for shape in ("noop", "3step"):
            for r in (1, 8):
                jobs.append(
                    Job(
                        f"agl LitAgentRunner {shape} agl-store(http) r={r}",
                        m,
                        lambda sh=shape, r=r: (reference_round(sh, m, llm_url, r), None, None),
                        "reference",
                        shape,
                        r,
                    )
                )
        jobs.append(
            Job(
                "agl 3step agent alone r=1",
                m,
                lambda: (reference_round("3step-alone", m, llm_url), None, None),
                "reference-alone",
                "3step",
                1,
            )
        )
    # Rounds are interleaved (every row once per pass, then the next pass), so that the load
    # of the shared machine changing over minutes reaches every row alike.
    results: dict[str, list[tuple[float, float | None, tuple[float, float] | None]]] = {}
    try:
        for k in range(args.rounds):
            for job in jobs:
                results.setdefault(job.name, []).append(job.run())
            print(f"  pass {k + 1} of {args.rounds} done", file=sys.stderr)
    finally:
        llm_proc.terminate()
    for job in jobs:
        got = results[job.name]
        rows.append(
            _row(job.name, job.count, [r[0] for r in got], [r[1] for r in got], [r[2] for r in got])
        )
    # Overhead: a 3-step row's ms/rollout minus its workflow's own, at the same concurrency.
    ms = {r["config"]: r["ms"] for r in rows}
    for job, r in zip(jobs, rows, strict=True):
        base = workflow_alone(jobs, job)
        r["overhead"] = r["ms"] - ms[base.name] if base is not None else None
    print(f"\nrunner benchmark: {args.rounds} rounds, median [min-max]")
    print("store calls/rollout: SQLite commits (in-process) or HTTP requests (server), median")
    print("CPU ms/rollout (over HTTP): runner process + store server process, median")
    print("overhead (3step): ms/rollout minus the workflow alone's at the same concurrency")
    print(
        f"{'configuration':<46} {'rollouts/s':>26} {'ms/rollout':>24} {'calls/rollout':>14}"
        f" {'CPU ms/rollout':>16} {'overhead ms':>12}"
    )
    for r in rows:
        rate = f"{r['rate']:.1f} [{r['rate_lo']:.1f}-{r['rate_hi']:.1f}]"
        ms = f"{r['ms']:.2f} [{r['ms_lo']:.2f}-{r['ms_hi']:.2f}]"
        calls = f"{r['calls']:.2f}" if r.get("calls") is not None else "-"
        ovh = f"{r['overhead']:.2f}" if r.get("overhead") is not None else "-"
        print(f"{r['config']:<46} {rate:>26} {ms:>24} {calls:>14} {r['cpu']:>16} {ovh:>12}")
    ratios = ratios_per_pass(results, jobs)
    if ratios:
        print("\nlightspan over HTTP / the reference at the same concurrency (w=1: r=1; w=8 and")
        print(
            "w=32: r=8), rollouts/s, computed in each pass (both rows ran in it): median [min-max]"
        )
        for name, (ref, got) in ratios.items():
            print(
                f"{name:<46} / {ref:<40} {statistics.median(got):6.1f}x "
                f"[{min(got):.1f}-{max(got):.1f}]"
            )


class Job(NamedTuple):
    """One row of the table: how to run a round of it, and what it is (for the pairings)."""

    name: str
    count: int
    run: Callable[[], tuple[float, Any, Any]]
    kind: str
    """``lightspan`` (in-process store), ``lightspan-http``, ``alone`` (the workflow by itself),
    ``reference`` (agl's runner) or ``reference-alone`` (agl's agent by itself)."""
    shape: str
    workers: int
    """Workers, or for the reference its runner processes."""


def _job(jobs: Sequence[Job], kind: str, shape: str, workers: int) -> Job | None:
    return next(
        (j for j in jobs if j.kind == kind and j.shape == shape and j.workers == workers), None
    )


def workflow_alone(jobs: Sequence[Job], job: Job) -> Job | None:
    """The row of ``job``'s workflow run by itself at its concurrency (3-step rows only)."""
    if job.shape != "3step":
        return None
    if job.kind in ("lightspan", "lightspan-http"):
        return _job(jobs, "alone", job.shape, job.workers)
    if job.kind == "reference" and job.workers == 1:
        return _job(jobs, "reference-alone", job.shape, 1)
    return None


def reference_for(jobs: Sequence[Job], job: Job) -> Job | None:
    """The reference row a lightspan row over HTTP is compared with: agl's runner on the same
    workflow, one process for one worker, eight for more."""
    if job.kind != "lightspan-http":
        return None
    return _job(jobs, "reference", job.shape, 1 if job.workers == 1 else 8)


def ratios_per_pass(
    results: dict[str, list[tuple[float, Any, Any]]], jobs: Sequence[Job]
) -> dict[str, tuple[str, list[float]]]:
    """For each lightspan row over HTTP (v0.3 API rows and unshared ones included), its
    rollouts/s over the reference row's at the same concurrency, pass by pass."""
    out: dict[str, tuple[str, list[float]]] = {}
    for job in jobs:
        ref = reference_for(jobs, job)
        if ref is None:
            continue
        out[job.name] = (
            ref.name,
            [
                (job.count / ours[0]) / (ref.count / theirs[0])
                for ours, theirs in zip(results[job.name], results[ref.name], strict=True)
            ],
        )
    return out


if __name__ == "__main__":
    main()
