"""A tiny OpenAI-compatible chat server on 127.0.0.1 that returns token ids like vLLM.

Runs inside Agent Lightning's venv (no pytest). It answers ``echo: <last user message>``,
reports word counts as usage, and, like vLLM with ``return_token_ids``, returns
``prompt_token_ids`` (top level) and ``choices[0].token_ids``: one id per word, so tests can
check that the ids reached the spans unchanged. Every request path is recorded, so tests can
check agl's per-rollout proxy route (``/rollout/{rollout_id}/attempt/{attempt_id}/v1``).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def token_ids(text: str) -> list[int]:
    """One id per word: deterministic, so a test can recompute them."""
    return [sum(map(ord, w)) % 50000 + 1 for w in text.split()]


class FakeOpenAI:
    def __init__(self, return_ids: bool = True) -> None:
        self.return_ids = return_ids
        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                state.paths.append(self.path)
                prompt_text = " ".join(str(m.get("content", "")) for m in body["messages"])
                answer = f"echo: {body['messages'][-1]['content']}"
                choice: dict[str, Any] = {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
                resp: dict[str, Any] = {
                    "id": f"chatcmpl-{len(state.paths)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [choice],
                    "usage": {
                        "prompt_tokens": len(prompt_text.split()),
                        "completion_tokens": len(answer.split()),
                        "total_tokens": len(prompt_text.split()) + len(answer.split()),
                    },
                }
                if state.return_ids:
                    resp["prompt_token_ids"] = token_ids(prompt_text)
                    choice["token_ids"] = token_ids(answer)
                data = json.dumps(resp).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
