"""REST API semantics of ``lightspan store serve`` (status codes and bodies of the v0.3 protocol)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.store.servers import StoreProcess

API = "/v1/agl"


@pytest.fixture(scope="module")
def server() -> Iterator[StoreProcess]:
    proc = StoreProcess("memory").start()
    yield proc
    assert proc.stop() == 0, proc.log()[-2000:]


@pytest.fixture
def http(server: StoreProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.address + API, timeout=10) as client:
        yield client


def _span(rollout_id: str, attempt_id: str, seq: int, name: str = "s") -> dict:
    trace_id = uuid.uuid4().hex
    span_id = uuid.uuid4().hex[:16]
    return {
        "rollout_id": rollout_id,
        "attempt_id": attempt_id,
        "sequence_id": seq,
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_id": None,
        "name": name,
        "status": {"status_code": "OK", "description": None},
        "attributes": {"k": 1, "l": ["a", "b"]},
        "events": [],
        "links": [],
        "start_time": 1.5,
        "end_time": 2.5,
        "context": {
            "trace_id": trace_id,
            "span_id": span_id,
            "is_remote": False,
            "trace_state": {},
        },
        "parent": None,
        "resource": {"attributes": {"service.name": "t"}, "schema_url": ""},
        "custom_extra": {"kept": True},
    }


def test_health(http: httpx.Client) -> None:
    r = http.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_queue_round_trip(http: httpx.Client) -> None:
    r = http.post(
        "/queues/rollouts/enqueue", json={"rollouts": [{"input": {"n": 1}, "mode": "train"}]}
    )
    assert r.status_code == 201
    [rollout] = r.json()
    assert rollout["status"] == "queuing" and rollout["rollout_id"].startswith("ro-")
    r = http.post("/queues/rollouts/dequeue", json={"limit": 5, "worker_id": "w-rest"})
    assert r.status_code == 200
    got = [x for x in r.json() if x["rollout_id"] == rollout["rollout_id"]]
    assert got and got[0]["status"] == "preparing"
    assert got[0]["attempt"]["status"] == "preparing" and got[0]["attempt"]["sequence_id"] == 1
    assert got[0]["attempt"]["worker_id"] == "w-rest"
    # Empty body dequeue is allowed; nothing left -> []
    assert http.post("/queues/rollouts/dequeue").json() == []
    assert http.post("/queues/rollouts/dequeue", json={"limit": 0}).json() == []


def test_unknown_rollout_is_null_on_get_and_404_on_update(http: httpx.Client) -> None:
    r = http.get("/rollouts/ro-doesnotexist")
    assert r.status_code == 200 and r.json() is None
    r = http.post("/rollouts/ro-doesnotexist", json={"status": "failed"})
    assert r.status_code == 404 and "ro-doesnotexist" in r.json()["detail"]
    r = http.post("/rollouts/ro-doesnotexist/attempts", json={})
    assert r.status_code == 404 and "ro-doesnotexist" in r.json()["detail"]
    r = http.post("/rollouts/ro-doesnotexist/attempts/latest", json={"status": "failed"})
    assert r.status_code == 404 and "ro-doesnotexist" in r.json()["detail"]
    assert http.get("/rollouts/ro-doesnotexist/attempts/latest").json() is None


def test_bad_bodies(http: httpx.Client) -> None:
    rollout = http.post("/rollouts", json={"input": "x"}).json()
    rid = rollout["rollout_id"]
    # not JSON -> 400 with a message
    r = http.post(
        f"/rollouts/{rid}", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "JSON" in r.json()["detail"]
    # does not validate -> 422 with FastAPI-style detail
    r = http.post(f"/rollouts/{rid}", json={"status": "bogus"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["status"]
    # explicit null where a value is required -> 400
    for field in ("status", "config"):
        r = http.post(f"/rollouts/{rid}", json={field: None})
        assert r.status_code == 400 and field in r.json()["detail"]
    aid = rollout["attempt"]["attempt_id"]
    for field in ("status", "worker_id", "last_heartbeat_time", "metadata"):
        r = http.post(f"/rollouts/{rid}/attempts/{aid}", json={field: None})
        assert r.status_code == 400, field
    r = http.post("/workers/w-null", json={"heartbeat_stats": None})
    assert r.status_code == 400
    # omitted fields are left unchanged; nullable ones may be cleared
    r = http.post(f"/rollouts/{rid}", json={"metadata": None, "mode": "val"})
    assert r.status_code == 200
    assert r.json()["mode"] == "val" and r.json()["metadata"] is None and r.json()["input"] == "x"


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=-2",
        "offset=-1",
        "sort_by=not_a_field",
        "sort_order=up",
        "filter_logic=xor",
    ],
)
def test_bad_pagination(http: httpx.Client, query: str) -> None:
    r = http.get(f"/rollouts?{query}")
    assert r.status_code in (400, 422), r.text
    if query.startswith(("limit", "offset", "sort_by")):
        assert r.status_code == 400


def test_query_rollouts_filters_and_pages(http: httpx.Client) -> None:
    ids = [
        r["rollout_id"]
        for r in http.post(
            "/queues/rollouts/enqueue", json={"rollouts": [{"input": i} for i in range(5)]}
        ).json()
    ]
    r = http.get(
        "/rollouts", params=[("rollout_id_in", i) for i in ids] + [("limit", 2), ("offset", 1)]
    )
    page = r.json()
    assert (
        r.status_code == 200 and page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    )
    assert len(page["items"]) == 2
    r = http.post(
        "/rollouts/search",
        json={
            "rollout_id_in": ids,
            "status_in": ["queuing"],
            "sort_by": "rollout_id",
            "sort_order": "desc",
        },
    )
    items = r.json()["items"]
    assert [x["rollout_id"] for x in items] == sorted(ids, reverse=True)
    r = http.get("/rollouts", params=[("status_in", "cancelled"), ("rollout_id_in", ids[0])])
    assert r.json()["total"] == 0


def test_spans_attempts_and_wait(http: httpx.Client) -> None:
    started = http.post("/rollouts", json={"input": {"q": "2+2"}, "worker_id": "w1"})
    assert started.status_code == 201
    rid = started.json()["rollout_id"]
    aid = started.json()["attempt"]["attempt_id"]
    seq = http.post("/spans/next", json={"rollout_id": rid, "attempt_id": aid}).json()[
        "sequence_id"
    ]
    body = _span(rid, aid, seq)
    r = http.post("/spans", json=body)
    assert r.status_code == 201
    stored = r.json()
    assert stored["custom_extra"] == {"kept": True} and stored["attributes"]["l"] == ["a", "b"]
    # duplicate (rollout, attempt, span_id) -> null, nothing stored
    assert http.post("/spans", json=body).json() is None
    http.post("/spans", json=_span(rid, aid, seq + 1, name="second"))
    # the first span made attempt and rollout running
    assert http.get(f"/rollouts/{rid}").json()["status"] == "running"
    page = http.get("/spans", params={"rollout_id": rid, "attempt_id": "latest"}).json()
    assert page["total"] == 2 and [s["name"] for s in page["items"]] == ["s", "second"]
    page = http.post("/spans/search", json={"rollout_id": rid, "name_contains": "sec"}).json()
    assert [s["name"] for s in page["items"]] == ["second"]
    page = http.post(
        "/spans/search",
        json={"rollout_id": rid, "sort_by": "sequence_id", "sort_order": "desc", "limit": 1},
    ).json()
    assert page["total"] == 2 and page["items"][0]["name"] == "second"
    # a span that does not validate -> 422
    assert http.post("/spans", json={"rollout_id": rid}).status_code == 422
    # nothing finished yet
    assert http.post("/waits/rollouts", json={"rollout_ids": [rid], "timeout": 0}).json() == []
    r = http.post(f"/rollouts/{rid}/attempts/{aid}", json={"status": "succeeded"})
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    done = http.post(
        "/waits/rollouts", json={"rollout_ids": [rid, "ro-unknown"], "timeout": 1}
    ).json()
    assert [x["rollout_id"] for x in done] == [rid] and done[0]["status"] == "succeeded"
    attempts = http.get(f"/rollouts/{rid}/attempts").json()
    assert attempts["total"] == 1 and attempts["items"][0]["attempt_id"] == aid
    assert http.post(f"/rollouts/{rid}/attempts/search", json={}).json()["total"] == 1
    assert http.get(f"/rollouts/{rid}/attempts/latest").json()["attempt_id"] == aid


def test_retry_after_failed_attempt(http: httpx.Client) -> None:
    config = {"max_attempts": 2, "retry_condition": ["failed"]}
    [rollout] = http.post(
        "/queues/rollouts/enqueue", json={"rollouts": [{"input": 1, "config": config}]}
    ).json()
    rid = rollout["rollout_id"]
    # other tests' rollouts may be queued too: start an attempt directly
    first = http.post(f"/rollouts/{rid}/attempts", json={"worker_id": "w2"}).json()
    r = http.post(f"/rollouts/{rid}/attempts/latest", json={"status": "failed"})
    assert r.status_code == 200
    assert http.get(f"/rollouts/{rid}").json()["status"] == "requeuing"
    second = http.post(f"/rollouts/{rid}/attempts", json={}).json()
    assert second["attempt"]["sequence_id"] == first["attempt"]["sequence_id"] + 1


def test_resources(http: httpx.Client) -> None:
    resources = {
        "main_llm": {
            "resource_type": "llm",
            "endpoint": "http://127.0.0.1:1/v1",
            "model": "m",
            "sampling_parameters": {"temperature": 0.1},
        },
        "prompt": {"resource_type": "prompt_template", "template": "Q: {q}", "engine": "f-string"},
    }
    r = http.post("/resources", json=resources)
    assert r.status_code == 201
    created = r.json()
    assert created["version"] == 1 and created["resources"]["prompt"]["template"] == "Q: {q}"
    rsid = created["resources_id"]
    assert http.get("/resources/latest").json()["resources_id"] == rsid
    resources["prompt"]["template"] = "Question: {q}"
    updated = http.post(f"/resources/{rsid}", json=resources).json()
    assert updated["version"] == 2
    assert (
        http.get(f"/resources/{rsid}").json()["resources"]["prompt"]["template"] == "Question: {q}"
    )
    assert http.get("/resources/rs-unknown").json() is None
    page = http.get("/resources", params={"resources_id": rsid}).json()
    assert page["total"] == 1
    bad = http.post("/resources", json={"x": {"resource_type": "nope"}})
    assert bad.status_code == 422


def test_workers_and_statistics(http: httpx.Client) -> None:
    r = http.post("/workers/w-stats", json={"heartbeat_stats": {"cpu": 0.5}})
    assert r.status_code == 200 and r.json()["heartbeat_stats"] == {"cpu": 0.5}
    assert http.post("/workers/w-empty").status_code == 200
    assert http.get("/workers/w-stats").json()["worker_id"] == "w-stats"
    assert http.get("/workers/w-nobody").json() is None
    page = http.post("/workers/search", json={"worker_id_contains": "w-stats"}).json()
    assert page["total"] == 1
    assert http.get("/workers", params={"worker_id_contains": "w-"}).json()["total"] >= 2
    stats = http.get("/statistics").json()
    for key in (
        "total_rollouts",
        "total_attempts",
        "total_spans",
        "total_resources",
        "total_workers",
    ):
        assert isinstance(stats[key], int)


def test_graceful_shutdown_drains_in_flight_requests() -> None:
    """SIGTERM while a request is in flight: it still gets its answer; then the server exits 0."""
    import threading
    import time

    proc = StoreProcess("memory").start()
    rid = httpx.post(proc.address + API + "/rollouts", json={"input": 1}).json()["rollout_id"]
    result: dict = {}

    def long_poll() -> None:
        t0 = time.monotonic()
        r = httpx.post(
            proc.address + API + "/waits/rollouts",
            json={"rollout_ids": [rid], "timeout": 3.0},
            timeout=30,
        )
        result.update(status=r.status_code, body=r.json(), took=time.monotonic() - t0)

    try:
        thread = threading.Thread(target=long_poll)
        thread.start()
        time.sleep(1.5)  # the wait is now in flight on the server
        assert proc.proc is not None
        proc.proc.terminate()
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no new connections once shutdown began
            httpx.get(proc.address + API + "/health", timeout=2)
        thread.join(30)
        assert result == {"status": 200, "body": [], "took": result["took"]}
        assert result["took"] >= 2.9
        assert proc.proc.wait(15) == 0, proc.log()[-2000:]
        assert "lightspan store stopped" in proc.log()
    finally:
        proc.kill()


def test_busy_port_is_a_clear_error() -> None:
    import socket
    import subprocess
    import sys

    from tests.fixtures.ports import free_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cmd = [sys.executable, "-m", "lightspan.store.server.cli", "serve", "--backend", "memory"]
        proc = subprocess.run(
            [*cmd, "--port", str(port), "--grpc-port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert f"cannot listen for HTTP on http://127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def _claim_two(http: httpx.Client, worker: str) -> list[dict]:
    r = http.post(
        "/queues/rollouts/enqueue",
        json={"rollouts": [{"input": {"n": i}, "mode": "train"} for i in range(2)]},
    )
    ids = {x["rollout_id"] for x in r.json()}
    got = [
        x
        for x in http.post(
            "/queues/rollouts/dequeue", json={"limit": 50, "worker_id": worker}
        ).json()
        if x["rollout_id"] in ids
    ]
    assert len(got) == 2
    return got


def test_runner_exchange_updates(http: httpx.Client) -> None:
    """``POST /runner/exchange`` (lightspan extension) with updates only: one result per item,
    in order; an unknown attempt fails its item only; a malformed body fails the request."""
    a, b = _claim_two(http, "w-m")
    r = http.post(
        "/runner/exchange",
        json={
            "updates": [
                {
                    "rollout_id": a["rollout_id"],
                    "attempt_id": a["attempt"]["attempt_id"],
                    "status": "succeeded",
                    "worker_id": "w-ran",
                },
                {"rollout_id": "ro-doesnotexist", "attempt_id": "at-x", "status": "failed"},
                {
                    "rollout_id": b["rollout_id"],
                    "attempt_id": b["attempt"]["attempt_id"],
                    "status": "failed",
                    "metadata": {"error": "E: boom"},
                },
            ]
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rollouts"] == []
    assert body["spans"] == {"rejected": 0, "message": ""}
    res = body["results"]
    assert len(res) == 3
    assert res[0]["attempt"]["status"] == "succeeded" and res[0]["attempt"]["worker_id"] == "w-ran"
    assert res[1]["error"]["status"] == 404 and "ro-doesnotexist" in res[1]["error"]["detail"]
    assert res[2]["attempt"]["status"] == "failed"
    assert res[2]["attempt"]["metadata"] == {"error": "E: boom"}
    assert http.get(f"/rollouts/{a['rollout_id']}").json()["status"] == "succeeded"
    assert http.get(f"/rollouts/{b['rollout_id']}").json()["status"] in ("failed", "requeuing")
    null = {"rollout_id": a["rollout_id"], "attempt_id": "latest", "status": None}
    r = http.post("/runner/exchange", json={"updates": [null]})
    assert r.status_code == 400 and "status cannot be null" in r.json()["detail"]
    r = http.post("/runner/exchange", json={"updates": [{"status": "failed"}]})
    assert r.status_code == 422
    assert http.post("/runner/exchange", content=b"{nope").status_code == 400
    r = http.post("/runner/exchange", json={})
    assert r.json() == {"spans": {"rejected": 0, "message": ""}, "results": [], "rollouts": []}


def test_runner_exchange_stores_spans_then_statuses_and_dequeues(http: httpx.Client) -> None:
    """Spans, then the statuses they precede, and a dequeue, in one request: the spans are
    readable when the status says finished; the claimed rollouts come back in the answer."""
    import base64

    from tests.store.otlp_payloads import make_request

    a, _ = _claim_two(http, "w-x")
    rid, aid = a["rollout_id"], a["attempt"]["attempt_id"]
    req, span_ids = make_request(3, rollout_id=rid, attempt_id=aid)
    stray, _ = make_request(1, rollout_id=None, attempt_id=None)  # no owner: rejected
    req.resource_spans.extend(stray.resource_spans)
    http.post(
        "/queues/rollouts/enqueue", json={"rollouts": [{"input": {"n": 9}}, {"input": {"n": 10}}]}
    )
    r = http.post(
        "/runner/exchange",
        json={
            "otlp": base64.b64encode(req.SerializeToString()).decode(),
            "updates": [{"rollout_id": rid, "attempt_id": aid, "status": "succeeded"}],
            "dequeue": {"limit": 1, "worker_id": "w-next"},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["spans"]["rejected"] == 1 and "rollout" in body["spans"]["message"]
    assert body["results"][0]["attempt"]["status"] == "succeeded"
    (claimed,) = body["rollouts"]
    assert claimed["attempt"]["worker_id"] == "w-next" and claimed["status"] == "preparing"
    assert http.get(f"/rollouts/{rid}").json()["status"] == "succeeded"
    stored = http.get("/spans", params={"rollout_id": rid}).json()
    assert sorted(s["span_id"] for s in stored["items"]) == sorted(span_ids)
    # bad spans fail the whole request before any update or dequeue
    before = http.get(f"/rollouts/{claimed['rollout_id']}/attempts").json()["total"]
    for bad in ("%%%not base64", base64.b64encode(b"\xff\x01garbage").decode()):
        r = http.post(
            "/runner/exchange",
            json={
                "otlp": bad,
                "updates": [
                    {
                        "rollout_id": claimed["rollout_id"],
                        "attempt_id": claimed["attempt"]["attempt_id"],
                        "status": "failed",
                    }
                ],
                "dequeue": {"limit": 5},
            },
        )
        assert r.status_code == 400 and r.json()["detail"].startswith("otlp: "), r.text
    assert http.get(f"/rollouts/{claimed['rollout_id']}").json()["status"] == "preparing"
    assert http.get(f"/rollouts/{claimed['rollout_id']}/attempts").json()["total"] == before
    r = http.post("/runner/exchange", json={"dequeue": {"limit": 10**6}})
    assert r.status_code == 400 and "limit must be at most" in r.json()["detail"]


def test_runner_exchange_records_worker_heartbeats(http: httpx.Client) -> None:
    """``workers`` in an exchange: each worker created or refreshed as ``update_worker`` does
    (stats replaced, heartbeat time moved), in the request's transaction; a malformed item or
    too many fail the request before anything is written."""
    r = http.post(
        "/runner/exchange",
        json={"workers": [{"worker_id": f"hb-{i}", "heartbeat_stats": {"n": i}} for i in range(3)]},
    )
    assert r.status_code == 200, r.text
    items = http.get("/workers", params={"worker_id_contains": "hb-"}).json()["items"]
    got = {w["worker_id"]: w for w in items}
    assert {k: w["heartbeat_stats"] for k, w in got.items()} == {
        f"hb-{i}": {"n": i} for i in range(3)
    }
    first = got["hb-0"]["last_heartbeat_time"]
    assert first is not None
    r = http.post(
        "/runner/exchange", json={"workers": [{"worker_id": "hb-0", "heartbeat_stats": {"n": 7}}]}
    )
    assert r.status_code == 200, r.text
    again = http.get("/workers/hb-0").json()
    assert again["heartbeat_stats"] == {"n": 7} and again["last_heartbeat_time"] >= first
    r = http.post("/runner/exchange", json={"workers": [{"heartbeat_stats": {}}]})
    assert r.status_code == 422
    many = [{"worker_id": f"hb-x{i}"} for i in range(10_001)]
    r = http.post("/runner/exchange", json={"workers": many})
    assert r.status_code == 400 and "workers per request" in r.json()["detail"]
    assert not http.get("/workers", params={"worker_id_contains": "hb-x"}).json()["items"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--span-id-cache", "0"], "--span-id-cache must be a positive number, got 0"),
        (
            ["--backend", "memory", "--span-id-cache", "5"],
            "--span-id-cache applies to --backend sqlite or postgres",
        ),
    ],
)
def test_a_bad_span_id_cache_is_a_clear_error(tmp_path, args: list[str], message: str) -> None:
    import subprocess
    import sys

    from tests.fixtures.ports import free_port

    cmd = [sys.executable, "-m", "lightspan.store.server.cli", "serve", "--db", str(tmp_path / "s")]
    proc = subprocess.run(
        [*cmd, *args, "--port", str(free_port()), "--grpc-port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_span_id_cache_flag_reaches_the_store(tmp_path) -> None:
    import argparse

    from lightspan.store.backends.factory import create_store
    from lightspan.store.server.cli import add_store_commands, store_options

    parser = argparse.ArgumentParser()
    add_store_commands(parser.add_subparsers())
    db = str(tmp_path / "s.db")
    args = parser.parse_args(["store", "serve", "--db", db, "--span-id-cache", "1000"])
    store = create_store(args.backend, **store_options(args))
    assert store._span_keys.max_spans == 1000  # type: ignore[attr-defined]
    default = parser.parse_args(["store", "serve", "--db", db])
    assert "span_id_cache" not in store_options(default)
