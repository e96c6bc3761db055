"""Shared parts of the store benchmarks: the span workloads, the servers, the OTLP senders and
the statistics over rounds.

Why a shared module: ``store_ingest.py`` and ``store_read.py`` must feed the reference ``agl
store`` and our server the same spans, start them the same way, and summarise rounds the same
way, or their figures could not be compared.

Workloads (pre-encoded OTLP protobuf, so the sender's encoding cost is not measured):

* ``realistic`` (default): what a fleet of runners sends while training. Each export request
  is one runner's batch covering several rollouts/attempts running side by side; its spans are
  an agent's steps: ``openai.chat.completion`` LLM calls carrying the flattened ``gen_ai.*``
  prompt/completion attributes that Agent Lightning's adapters read plus the GenAI-convention
  usage attributes, ``agentlightning.operation`` tool calls, and ``agentlightning.annotation``
  rewards (1 span in 8). Half of the requests are shaped as Agent Lightning 0.3's tracer
  writes them (rollout, attempt and sequence id in each span's *resource*, so one
  ``ResourceSpans`` per span), half as ours writes them (ids as *span attributes*, stamped by
  ``RolloutAttributesProcessor``; one resource per batch). ~670 bytes of OTLP per span on
  average (~740 Agent Lightning-shaped, ~600 lightspan-shaped).
* ``synthetic``: the earlier workload: one rollout, 10 short ``gen_ai.*`` attributes per span,
  ~460 bytes per span.
"""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

REPO = Path(__file__).resolve().parents[1]
AGL_VENV = Path(os.environ.get("LIGHTSPAN_AGL_VENV", Path.home() / ".cache/lightspan/agl-venv"))
AGL_ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
REFERENCE = "agl store (reference)"

# --------------------------------------------------------------------------- workloads


def _kv(key: str, value: object) -> KeyValue:
    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    else:
        v.string_value = str(value)
    return KeyValue(key=key, value=v)


SDK_RESOURCE = {
    "telemetry.sdk.language": "python",
    "telemetry.sdk.name": "opentelemetry",
    "telemetry.sdk.version": "1.39.1",
    "service.name": "agent-runner",
}
SYSTEM_PROMPTS = [
    "You answer questions about SQL databases with one SQL query.",
    "You are a math tutor. Give the final answer after '####'.",
    "You are an agent. Use the calculator tool for arithmetic.",
]
QUESTIONS = [
    "Which customers placed more than three orders in 2024?",
    "Pens cost 3 for $2. How much do 27 pens cost?",
    "List the five most recent invoices and who handled them.",
]
ANSWERS = [
    "SELECT name FROM customers JOIN orders USING (id) GROUP BY id HAVING COUNT(*) > 3;",
    "27 pens are 9 groups of 3: 9 * 2 = 18. #### 18",
    "I will call the calculator tool with 9 * 2.",
]


@dataclass
class Attempt:
    """A rollout attempt known to a server, and the next span sequence id it will use."""

    rollout_id: str
    attempt_id: str
    next_seq: int = 1
    steps: int = 0


def _llm_span(ss, trace_id: bytes, parent: bytes, att: Attempt, k: int, now: int, own) -> None:
    s = ss.spans.add()
    s.trace_id, s.span_id, s.parent_span_id = trace_id, os.urandom(8), parent
    s.name, s.kind = "openai.chat.completion", 3
    s.start_time_unix_nano, s.end_time_unix_nano = now, now + 850_000_000
    j = k % 3
    s.attributes.extend(own)
    s.attributes.extend(
        [
            _kv("gen_ai.operation.name", "chat"),
            _kv("gen_ai.request.model", "qwen2.5-1.5b-instruct"),
            _kv("gen_ai.prompt.0.role", "system"),
            _kv("gen_ai.prompt.0.content", SYSTEM_PROMPTS[j]),
            _kv("gen_ai.prompt.1.role", "user"),
            _kv("gen_ai.prompt.1.content", QUESTIONS[j]),
            _kv("gen_ai.completion.0.role", "assistant"),
            _kv("gen_ai.completion.0.content", ANSWERS[j]),
            _kv("gen_ai.response.id", f"chatcmpl-{k:012x}"),
            _kv("gen_ai.usage.input_tokens", 60 + k % 40),
            _kv("gen_ai.usage.output_tokens", 20 + k % 30),
        ]
    )
    s.status.code = 1


def _operation_span(ss, trace_id: bytes, parent: bytes, k: int, now: int, own) -> None:
    s = ss.spans.add()
    s.trace_id, s.span_id, s.parent_span_id = trace_id, os.urandom(8), parent
    s.name, s.kind = "agentlightning.operation", 1
    s.start_time_unix_nano, s.end_time_unix_nano = now, now + 2_000_000
    s.attributes.extend(own)
    s.attributes.extend(
        [
            _kv("agentlightning.operation.name", "calculator"),
            _kv("agentlightning.operation.input", f'{{"expression": "9 * {k % 10}"}}'),
            _kv("agentlightning.operation.output", str(9 * (k % 10))),
        ]
    )
    s.status.code = 1


def _reward_span(ss, trace_id: bytes, parent: bytes, k: int, now: int, own) -> None:
    s = ss.spans.add()
    s.trace_id, s.span_id, s.parent_span_id = trace_id, os.urandom(8), parent
    s.name, s.kind = "agentlightning.annotation", 1
    s.start_time_unix_nano, s.end_time_unix_nano = now, now + 1000
    s.attributes.extend(own)
    s.attributes.extend(
        [
            _kv("agentlightning.reward.0.name", "primary"),
            _kv("agentlightning.reward.0.value", float(k % 2)),
        ]
    )


def realistic_batch(attempts: list[Attempt], n: int, rng: random.Random, agl_shape: bool) -> bytes:
    """One export request of ``n`` spans spread over ``attempts`` (a runner's batch)."""
    req = ExportTraceServiceRequest()
    shared_ss = None
    if not agl_shape:
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(_kv(k, v) for k, v in SDK_RESOURCE.items())
        shared_ss = rs.scope_spans.add()
        shared_ss.scope.name = "lightspan"
    now = time.time_ns()
    traces = {id(a): os.urandom(16) for a in attempts}
    for i in range(n):
        att = attempts[i % len(attempts)]
        seq = att.next_seq
        att.next_seq += 1
        att.steps += 1
        if agl_shape:
            rs = req.resource_spans.add()
            rs.resource.attributes.extend(_kv(k, v) for k, v in SDK_RESOURCE.items())
            rs.resource.attributes.extend(
                [
                    _kv("agentlightning.rollout_id", att.rollout_id),
                    _kv("agentlightning.attempt_id", att.attempt_id),
                    _kv("agentlightning.span_sequence_id", seq),
                ]
            )
            ss = rs.scope_spans.add()
            ss.scope.name = "agentlightning"
            own: list[KeyValue] = []
        else:
            ss = shared_ss
            own = [
                _kv("agentlightning.rollout_id", att.rollout_id),
                _kv("agentlightning.attempt_id", att.attempt_id),
                _kv("lightspan.step.kind", "task"),
                _kv("lightspan.step.name", "agent_step"),
            ]
        trace_id, parent = traces[id(att)], os.urandom(8)
        k = rng.randrange(1 << 30)
        if att.steps % 8 == 0:
            _reward_span(ss, trace_id, parent, k, now + i * 1000, own)
        elif att.steps % 2 == 0:
            _operation_span(ss, trace_id, parent, k, now + i * 1000, own)
        else:
            _llm_span(ss, trace_id, parent, att, k, now + i * 1000, own)
    return req.SerializeToString()


def synthetic_batch(att: Attempt, batch_no: int, n: int) -> bytes:
    """The earlier workload: ``n`` LLM-call spans with 10 short attributes, one rollout."""
    att.steps += n
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(
        [
            _kv("service.name", "bench"),
            _kv("agentlightning.rollout_id", att.rollout_id),
            _kv("agentlightning.attempt_id", att.attempt_id),
        ]
    )
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    trace_id = os.urandom(16)
    now = time.time_ns()
    for i in range(n):
        s = ss.spans.add()
        s.trace_id, s.span_id, s.parent_span_id = trace_id, os.urandom(8), os.urandom(8)
        s.name, s.kind = "openai.chat.completion", 3
        s.start_time_unix_nano = now + i * 1000
        s.end_time_unix_nano = now + i * 1000 + 700
        k = batch_no * n + i
        s.attributes.extend(
            [
                _kv("gen_ai.operation.name", "chat"),
                _kv("gen_ai.request.model", "qwen2.5-coder-0.5b"),
                _kv("gen_ai.usage.input_tokens", 100 + i % 50),
                _kv("gen_ai.usage.output_tokens", 20 + i % 7),
                _kv("gen_ai.prompt.0.role", "user"),
                _kv("gen_ai.prompt.0.content", f"Question {k}: what is {i} + {i}?"),
                _kv("gen_ai.completion.0.role", "assistant"),
                _kv("gen_ai.completion.0.content", f"The answer is {2 * i}."),
                _kv("gen_ai.response.id", f"chatcmpl-{k}"),
            ]
        )
        s.status.code = 1
    return req.SerializeToString()


def workload(
    workload_name: str, attempts: list[Attempt], n_batches: int, batch: int, seed: int
) -> list[bytes]:
    """``n_batches`` requests of ``batch`` spans. Realistic: each request covers 8 attempts
    (runners run rollouts side by side), consecutive requests move through all attempts."""
    rng = random.Random(seed)
    out = []
    for b in range(n_batches):
        if workload_name == "synthetic":
            out.append(synthetic_batch(attempts[0], b, batch))
        else:
            group = [attempts[(b * 8 + j) % len(attempts)] for j in range(min(8, len(attempts)))]
            out.append(realistic_batch(group, batch, rng, agl_shape=b % 2 == 0))
    return out


# --------------------------------------------------------------------------- servers


@dataclass
class Target:
    label: str
    http: str  # REST/OTLP-HTTP root
    grpc: str | None  # host:port or None
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(target: Target, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            raise RuntimeError(f"{target.label} exited:\n{target.log.read_text()[-2000:]}")
        try:
            if httpx.get(target.http + "/v1/agl/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{target.label} not healthy after {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextmanager
def ours(
    label: str, backend: str, db: str | None, workdir: Path, env: dict[str, str] | None = None
) -> Iterator[Target]:
    """A fresh lightspan store server (``python -m lightspan.store.server.cli serve``); ``env``:
    extra environment variables (``LIGHTSPAN_NATIVE_INTAKE=0``: the Python converter)."""
    port, grpc_port = free_port(), free_port()
    args = [sys.executable, "-m", "lightspan.store.server.cli", "serve", "--backend", backend]
    args += ["--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "WARNING"]
    if db:
        args += ["--db", db]
    log = workdir / f"{label.replace(' ', '_')}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})}
        )
    target = Target(label, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", proc, log)
    try:
        _wait_healthy(target, 60)
        yield target
    finally:
        _stop(proc)


def agl_python() -> Path:
    python = AGL_VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"the reference needs {python}: run .ci/setup.d/40-agl-interop.sh")
    return python


@contextmanager
def reference(workdir: Path) -> Iterator[Target]:
    """A fresh Agent Lightning 0.3 ``agl store`` (in-memory, its default), as its users start
    it, from the side venv."""
    agl = AGL_VENV / "bin" / "agl"
    agl_python()
    port = free_port()
    log = workdir / "agl.log"
    args = [str(agl), "store", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*args, "--log-level", "WARNING"], stdout=out, stderr=subprocess.STDOUT, env=AGL_ENV
        )
    target = Target(REFERENCE, f"http://127.0.0.1:{port}", None, proc, log)
    try:
        _wait_healthy(target, 180)
        yield target
    finally:
        _stop(proc)


@contextmanager
def private_postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster (as tests/fixtures/postgres.py starts for the tests)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("no PostgreSQL binaries; install Debian's postgresql or pass --pg-dsn")
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="lightspan-bench-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_owner: list[str] = []
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for p in (root, sock):
            os.chown(p, entry.pw_uid, entry.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(
        [*as_owner, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200"
    pg_ctl = [*as_owner, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-l", str(root / "log"), "-o", opts, "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_attempts(target: Target, rollouts: int, second_every: int = 4) -> list[Attempt]:
    """``rollouts`` rollouts started over REST, every ``second_every``-th one with a second
    attempt (a retry), as the spans of a training run belong to many rollouts and attempts."""
    out = []
    with httpx.Client(base_url=target.http + "/v1/agl", timeout=60) as c:
        for i in range(rollouts):
            r = c.post("/rollouts", json={"input": {"task": i}})
            r.raise_for_status()
            body = r.json()
            out.append(Attempt(body["rollout_id"], body["attempt"]["attempt_id"]))
            if second_every and i % second_every == 0:
                r = c.post(f"/rollouts/{body['rollout_id']}/attempts", json={})
                r.raise_for_status()
                second = r.json()["attempt"]["attempt_id"]
                out.append(Attempt(body["rollout_id"], second, next_seq=1_000_000))
    return out


def check_stored(target: Target, attempts: list[Attempt], sample: int = 4) -> None:
    """The reference answers 200 even for spans it drops: count what a few attempts hold."""
    with httpx.Client(base_url=target.http + "/v1/agl", timeout=600) as c:
        for att in attempts[:sample]:
            body = {"rollout_id": att.rollout_id, "attempt_id": att.attempt_id, "limit": 1}
            r = c.post("/spans/search", json=body)
            r.raise_for_status()
            if r.json()["total"] != att.steps:
                raise RuntimeError(
                    f"{target.label}: {att.rollout_id}/{att.attempt_id} holds "
                    f"{r.json()['total']} spans, {att.steps} were sent"
                )


# --------------------------------------------------------------------------- measuring


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its descendants so far (Linux ``/proc``)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(x) for x in fields[11:15]) / tick  # utime stime cu cs
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in tree)


def load_average() -> str:
    """The 1/5/15-minute load averages: how busy the shared machine was."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def summary(values: list[float], fmt: str = "{:,.0f}") -> str:
    """``median (min-max)`` of per-round values."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"
