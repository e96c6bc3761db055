"""A fake arithmetic LLM for trainer logic tests (real HTTP on 127.0.0.1).

Its behaviour makes the search's choices matter without a real model: model ``big`` always
sums correctly but rambles (20 filler words after the answer) unless the prompt asks for
brevity; model ``small`` answers in 3 words and is right only when the sum is even or the
prompt asks it to work carefully (a cheap model a prompt edit repairs); model
``mini`` answers in 3 words and is always right (a cheaper model that is as good);
``max_tokens`` truncates the answer word by word with ``finish_reason=length``. Usage counts
words. Claims about real cost or quality are never made against it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.fake_llm import send_json, serving

FILLER = " ".join(["and"] * 20)


@dataclass
class ArithLLM:
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False


def answer(model: str, prompt: str) -> str:
    m = re.search(r"(\d+)\s*\+\s*(\d+)", prompt)
    total = int(m.group(1)) + int(m.group(2)) if m else 0
    brief = "briefly" in prompt.lower()
    if model == "small":
        careful = "carefully" in prompt.lower()
        return f"it is {total if total % 2 == 0 or careful else total + 1}"
    if model == "mini":
        return f"it is {total}"
    return f"the answer is {total}" + ("" if brief else " " + FILLER)


def _handler(state: ArithLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            if state.down:
                self.send_response(503)
                self.end_headers()
                return
            prompt = "\n".join(m["content"] for m in body["messages"])
            words = answer(body["model"], prompt).split()
            finish = "stop"
            cap = body.get("max_tokens")
            if cap is not None and len(words) > cap:
                words, finish = words[:cap], "length"
            resp = {
                "id": f"c{len(state.requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": finish,
                        "message": {"role": "assistant", "content": " ".join(words)},
                    }
                ],
                "usage": {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": len(words),
                    "total_tokens": len(prompt.split()) + len(words),
                },
            }
            send_json(self, resp)

    return Handler


@pytest.fixture
def arith_llm() -> Iterator[ArithLLM]:
    with serving(ArithLLM(), _handler) as state:
        yield state


PRICES = {
    "big": {"input": 1.0, "output": 10.0},
    "small": {"input": 0.1, "output": 1.0},
    "mini": {"input": 0.1, "output": 1.0},
}


def write_workflow(
    tmp: Path,
    base_url: str,
    *,
    model: str = "big",
    max_tokens: int = 64,
    template: str = "Compute {question}.",
) -> Path:
    wf = {
        "workflow": "arith",
        "evaluator": "tests.trainer.helpers:contains_expected",
        "resources": {
            "id": "arith-v0",
            "prompts": {"solve": {"template": template}},
            "llms": {
                "default": {
                    "endpoint": base_url,
                    "model": model,
                    "sampling_parameters": {"max_tokens": max_tokens},
                }
            },
        },
        "steps": [{"llm": {"name": "solve", "prompt": "solve"}}],
    }
    import yaml

    p = tmp / "wf.yaml"
    p.write_text(yaml.safe_dump(wf))
    return p


def write_tasks(tmp: Path, n: int = 24) -> Path:
    p = tmp / "tasks.jsonl"
    p.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"t{i}",
                    "input": {"question": f"{i} + {i + i % 2}"},
                    "expected": str(2 * i + i % 2),
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    return p
