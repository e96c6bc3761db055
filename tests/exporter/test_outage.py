"""Outage: the store server is stopped mid-run while workflows keep running, then restarted on
the same SQLite file and port. Spool on: every span arrives exactly once (replays of batches
the store already has are deduplicated). Spool off: what is missing is exactly what the
exporter counted as dropped. Either way the workflows are not held up."""

from __future__ import annotations

import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from lightspan.exporter import LightningStoreSpanExporter, exporter_from_config
from lightspan.store.api.client import LightningStoreClient
from tests.exporter.helpers import Pipeline, by_id, config, fork_join_workflow, start_pipeline
from tests.store.servers import StoreProcess

RUN_BOUND_S = 1.5
"""Bound on one workflow run during the outage (a run takes ~0.1 s with the fake LLM). It is
below the exporter's store timeout (``timeout_seconds`` 2.0 below): a run that waited on even
one export attempt to the down store would exceed it. The benchmark measures the real cost."""


def outage_config(server: StoreProcess, spool: Path, enabled: bool):
    return config(
        store={
            "type": "external",
            "address": server.address,
            "grpc_address": server.grpc_address,
            "timeout_seconds": 2.0,
        },
        exporter={"protocol": "grpc", "spool": {"path": str(spool), "enabled": enabled}},
    )


async def run_batch(pipe: Pipeline, base_url: str, n: int, label: str) -> list[str]:
    """Run ``n`` workflows, each within RUN_BOUND_S; flush the processor; return rollout ids."""
    wf = fork_join_workflow(base_url)
    ids = []
    for i in range(n):
        t0 = time.perf_counter()
        r = await wf.run(f"{label} {i}")
        took = time.perf_counter() - t0
        assert r.ok, r.error
        assert took < RUN_BOUND_S, f"run {label} {i} took {took:.2f}s"
        ids.append(r.rollout_id)
    await wf.aclose()
    pipe.flush()
    return ids


async def stored_span_ids(server: StoreProcess, rollout_ids: list[str]) -> list[str]:
    """Every stored span id of these rollouts (a list: duplicates would show)."""
    out: list[str] = []
    async with LightningStoreClient(server.address) as client:
        for rid in rollout_ids:
            out.extend(by_id((await client.query_spans(rid)).items))
        stats = await client.statistics()
    assert stats["total_spans"] == len(out), "the store holds spans of other rollouts"
    return out


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def make_exporter(server: StoreProcess, spool: Path, enabled: bool) -> LightningStoreSpanExporter:
    cfg = outage_config(server, spool, enabled)
    return exporter_from_config(cfg, environ={}, replay_backoff_s=0.1, replay_max_backoff_s=0.5)


async def test_spool_on_every_span_arrives_exactly_once(own_sqlite_server, fake_llm, tmp_path):
    server = own_sqlite_server.start()
    cfg = outage_config(server, tmp_path / "spool", True)
    exporter = make_exporter(server, tmp_path / "spool", True)
    assert exporter.spool is not None
    pipe = start_pipeline(cfg, exporter)
    try:
        before = await run_batch(pipe, fake_llm.base_url, 2, "before")
        assert exporter.stats().sent == len(pipe.produced())

        server.stop()
        during = await run_batch(pipe, fake_llm.base_url, 4, "during")
        s = exporter.stats()
        assert exporter.is_down and s.spooled > 0 and s.spool_files > 0 and s.dropped == 0
        # A batch the store already has, as if its acknowledgement had been lost before the
        # outage: the spool replays it too, and the store must not store it twice.
        already = [
            x for x in pipe.produced() if x.attributes["agentlightning.rollout_id"] in before
        ]
        exporter.spool.add(encode_spans(already).SerializeToString(), len(already))

        server.start()
        wait_until(lambda: exporter.stats().spool_files == 0, 30, "the spool to drain")
        after = await run_batch(pipe, fake_llm.base_url, 2, "after")
        produced = pipe.produced()
    finally:
        pipe.shutdown()

    stored = await stored_span_ids(server, before + during + after)
    assert sorted(stored) == sorted(format(x.context.span_id, "016x") for x in produced)
    s = exporter.stats()
    assert s.dropped == 0 and s.rejected == 0 and not exporter.is_down
    assert s.replayed == s.spooled + len(already)
    assert s.sent + s.spooled == len(produced)
    assert pipe.handle.stats().dropped == 0, "the processor's queue overflowed"


async def test_spool_off_the_dropped_count_is_what_is_missing(
    own_sqlite_server, fake_llm, tmp_path
):
    server = own_sqlite_server.start()
    cfg = outage_config(server, tmp_path / "spool", False)
    exporter = make_exporter(server, tmp_path / "spool", False)
    assert exporter.spool is None
    pipe = start_pipeline(cfg, exporter)
    try:
        before = await run_batch(pipe, fake_llm.base_url, 2, "before")
        server.stop()
        during = await run_batch(pipe, fake_llm.base_url, 3, "during")
        assert exporter.stats().dropped > 0
        server.start()
        # The exporter probes again after a backoff; wait for a batch to get through.
        after: list[str] = []

        async def one_more() -> None:
            after.extend(await run_batch(pipe, fake_llm.base_url, 1, "after"))

        deadline = time.monotonic() + 30
        while exporter.is_down and time.monotonic() < deadline:
            await one_more()
        assert not exporter.is_down, "the exporter never got through again"
        await one_more()
        produced = pipe.produced()
    finally:
        pipe.shutdown()

    stored = await stored_span_ids(server, before + during + after)
    assert len(stored) == len(set(stored))
    s = exporter.stats()
    assert len(produced) - len(stored) == s.dropped > 0
    assert s.sent == len(stored) and s.spooled == s.replayed == 0
    assert pipe.handle.stats().dropped == 0
