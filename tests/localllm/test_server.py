"""The real model behind an OpenAI-compatible endpoint: usage counts are what cost needs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI

from lightspan.localllm.bench import run_bench
from lightspan.localllm.models import DEFAULT_MODEL
from lightspan.localllm.process import LocalModelProcess
from lightspan.localllm.server import LocalModelServer, ServerStartError

pytestmark = pytest.mark.llm


async def test_chat_completion_returns_content_and_usage(llm_server: LocalModelProcess) -> None:
    assert llm_server.base_url.startswith("http://127.0.0.1:")
    assert llm_server.base_url.endswith("/v1") and llm_server.model == DEFAULT_MODEL
    async with AsyncOpenAI(base_url=llm_server.base_url, api_key="unused") as client:
        r = await client.chat.completions.create(
            model=llm_server.model,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
    assert r.choices[0].message.content
    assert r.model == llm_server.model
    assert r.usage is not None
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


async def test_streamed_completion_reports_usage_when_asked(
    llm_server: LocalModelProcess,
) -> None:
    async with AsyncOpenAI(base_url=llm_server.base_url, api_key="unused") as client:
        stream = await client.chat.completions.create(
            model=llm_server.model,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        usages = [chunk.usage async for chunk in stream if chunk.usage]
    assert len(usages) == 1 and usages[0].prompt_tokens > 0 and usages[0].completion_tokens > 0


async def test_concurrent_requests_are_served(llm_server: LocalModelProcess) -> None:
    async with AsyncOpenAI(base_url=llm_server.base_url, api_key="unused") as client:
        results = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=llm_server.model,
                    messages=[{"role": "user", "content": f"Count to {n}."}],
                    max_tokens=8,
                )
                for n in range(2, 6)
            )
        )
    assert all(r.usage and r.usage.completion_tokens > 0 for r in results)


def test_in_process_server_lists_the_model_and_stops() -> None:
    """The demo's way: a context manager in the calling process, on a free port."""
    with LocalModelServer(
        DEFAULT_MODEL, fetch_missing=False, threads=1, parallel=1, n_ctx=512
    ) as srv:
        url = srv.url
        models = httpx.get(f"{srv.base_url}/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == [DEFAULT_MODEL]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


def test_a_bad_model_file_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file" * 100)
    with pytest.raises(ServerStartError, match=r"llama.cpp could not serve .*bad.gguf"):
        LocalModelServer("bad", model_file=bad).start()


ORPHAN_PARENT = """
import os, sys
from lightspan.localllm.process import LocalModelProcess
p = LocalModelProcess(sys.argv[1], threads=1, parallel=1).start()
print(p.proc.pid, flush=True)
os.kill(os.getpid(), 9)
"""


def test_child_server_stops_on_sigterm_and_when_its_parent_dies() -> None:
    with LocalModelProcess(DEFAULT_MODEL, threads=1, parallel=1) as proc:
        assert httpx.get(f"{proc.base_url}/models", timeout=10).status_code == 200
        assert proc.stop() == 0  # SIGTERM: a clean exit

    parent = subprocess.run(
        [sys.executable, "-c", ORPHAN_PARENT, DEFAULT_MODEL],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert parent.returncode == -9, parent.stderr
    child = int(parent.stdout.strip())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    pytest.fail(f"orphaned model server {child} still ran 10s after its parent died")


def test_bench_measures_real_tokens() -> None:
    result = run_bench(DEFAULT_MODEL, threads=1, requests=2, concurrency=2, max_tokens=4)
    assert result.completion_tokens == 8 and result.prompt_tokens > 40
    assert result.generation_tps > 0 and result.throughput_tps > 0
    assert "smollm2-135m: threads=1 concurrency=2" in result.summary()


def test_repeatable_server_computes_every_prompt_from_scratch() -> None:
    """``--repeatable``: no prompt cache, so a request's answer cannot depend on the requests
    served before it (a reused prefix leaves the rest of the prompt to a batch of another
    size, whose numerics differ). The same request twice: the default server reuses the
    cached prefix (llama.cpp's ``timings.cache_n`` > 0), the repeatable one evaluates it all."""
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "Name three colours of the rainbow."}],
        "max_tokens": 4,
        "temperature": 0,
    }
    reused = {}
    for repeatable in (False, True):
        with LocalModelProcess(
            DEFAULT_MODEL, threads=1, parallel=1, repeatable=repeatable, ready_timeout=120
        ) as srv:
            got = [
                httpx.post(f"{srv.base_url}/chat/completions", json=body, timeout=120).json()
                for _ in range(2)
            ]
        reused[repeatable] = got[1]["timings"]["cache_n"]
        assert got[0]["choices"][0]["message"] == got[1]["choices"][0]["message"]
    assert reused[False] > 0 and reused[True] == 0, reused
