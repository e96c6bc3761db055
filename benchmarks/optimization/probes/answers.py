"""Model answers for the development probes, asked once and cached (agreement.py, cascade.py).

Why shared: each probe asks both models a few requests per task and reads the answers many
ways; the requests are cheap to describe and slow to run, so every answer is appended to a
JSON-lines cache as it comes and a re-run only asks what is missing. Servers: both models, one
slot, no prompt cache (``flips.model_servers``), so an answer does not depend on what else ran.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from benchmarks.optimization.probes.flips import LARGE, SMALL, model_servers
from benchmarks.optimization.tasks import Task
from rich.console import Console

Answer = dict[str, Any]
"""One answer: ``text``, ``in`` / ``out`` tokens, ``s`` wall seconds."""
AskAll = Callable[[httpx.AsyncClient, str, str, Task], Awaitable[list[Answer]]]
"""``(client, base URL, model, task)`` -> the task's answers from that model, in order."""


async def ask(client: httpx.AsyncClient, url: str, request: Mapping[str, Any]) -> Answer:
    """One chat completion, with its token counts and wall time."""
    t0 = time.monotonic()
    r = await client.post(f"{url}/chat/completions", json=dict(request), timeout=900)
    r.raise_for_status()
    data = r.json()
    usage = data.get("usage") or {}
    return {
        "text": data["choices"][0]["message"]["content"],
        "in": int(usage.get("prompt_tokens") or 0),
        "out": int(usage.get("completion_tokens") or 0),
        "s": time.monotonic() - t0,
    }


class AnswerCache:
    """Answers per (task, model), one JSON line each under ``field``, appended as they come."""

    def __init__(self, path: Path, field: str = "answers") -> None:
        self.path = path
        self.field = field
        self.rows: dict[tuple[str, str], list[Answer]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                self.rows[(row["task"], row["model"])] = row[field]

    def put(self, task: Task, model: str, answers: list[Answer]) -> None:
        self.rows[(task.id, model)] = answers
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            row = {"task": task.id, "family": task.family, "model": model, self.field: answers}
            f.write(json.dumps(row) + "\n")


async def collect(
    tasks: Sequence[Task], cache: AnswerCache, ask_all: AskAll, console: Console
) -> None:
    """Every missing (task, model) answer: one request stream per model server, in parallel."""
    todo = {m: [t for t in tasks if (t.id, m) not in cache.rows] for m in (SMALL, LARGE)}
    if not any(todo.values()):
        return
    with model_servers() as urls:
        async with httpx.AsyncClient() as client:

            async def per_model(model: str) -> None:
                for i, t in enumerate(todo[model]):
                    cache.put(t, model, await ask_all(client, urls[model], model, t))
                    console.print(f"{model}: {i + 1}/{len(todo[model])}")

            await asyncio.gather(*(per_model(m) for m in (SMALL, LARGE)))
