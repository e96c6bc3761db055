"""Calling an OpenAI-compatible chat endpoint, and what the call cost.

Why a thin layer over the official ``openai`` client: clients are reused per endpoint (one
connection pool each), the real token usage that the endpoint returns is the only basis for
cost, and the call is reported to listeners as one :class:`LLMCallInfo`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightspan.engine.errors import LLMCallError
from lightspan.engine.resources import LLMResource


@dataclass(frozen=True, slots=True)
class Price:
    """Currency units per million tokens."""

    input: float
    output: float


class PriceTable:
    """Per-model prices (``llm.prices`` in the configuration); unknown models cost 0, unpriced."""

    def __init__(self, prices: Mapping[str, Price | Mapping[str, float]] | None = None) -> None:
        self._prices: dict[str, Price] = {}
        for model, p in (prices or {}).items():
            if isinstance(p, Price):
                self._prices[model] = p
            elif hasattr(p, "input") and hasattr(p, "output"):
                self._prices[model] = Price(float(p.input), float(p.output))
            else:
                self._prices[model] = Price(float(p["input"]), float(p["output"]))

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> tuple[float, bool]:
        """``(cost, priced)`` for a call; ``priced`` is False when the model has no price."""
        price = self._prices.get(model)
        if price is None:
            return 0.0, False
        return (input_tokens * price.input + output_tokens * price.output) / 1_000_000, True

    def __contains__(self, model: str) -> bool:
        return model in self._prices


@dataclass(slots=True)
class ChatResult:
    """What came back from one chat completion."""

    content: str
    response_id: str | None
    response_model: str | None
    finish_reasons: list[str]
    input_tokens: int
    output_tokens: int
    latency_s: float


class ChatClients:
    """One ``openai.AsyncOpenAI`` client per (endpoint, api_key), created on first use."""

    def __init__(self, timeout_seconds: float = 120.0, max_retries: int = 2) -> None:
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._timeout = timeout_seconds
        self._max_retries = max_retries
        self._rates: dict[str, tuple[float, float]] = {}
        """model -> (characters per input token, output tokens per second of latency), learnt
        from answered calls (moving average) to estimate the usage of cancelled ones."""

    def client(self, llm: LLMResource) -> Any:
        key = (llm.endpoint, llm.api_key)
        client = self._clients.get(key)
        if client is None:
            import openai  # imported on first LLM call: workflows without LLMs never pay for it

            client = openai.AsyncOpenAI(
                base_url=llm.endpoint,
                api_key=llm.api_key or "not-needed",
                timeout=self._timeout,
                max_retries=self._max_retries,
            )
            self._clients[key] = client
        return client

    async def chat(self, llm: LLMResource, messages: list[dict[str, Any]]) -> ChatResult:
        """One chat completion with the resource's sampling parameters."""
        import openai

        params = dict(llm.sampling_parameters)
        t0 = time.perf_counter()
        try:
            resp = await self.client(llm).chat.completions.create(
                model=llm.model, messages=messages, **params
            )
        except openai.OpenAIError as e:
            raise LLMCallError(
                f"chat completion at {llm.endpoint} (model {llm.model!r}) failed: {e}"
            ) from e
        latency = time.perf_counter() - t0
        choice = resp.choices[0] if resp.choices else None
        usage = resp.usage
        if usage is not None:
            self._learn(
                llm.model, messages, int(usage.prompt_tokens), int(usage.completion_tokens), latency
            )
        return ChatResult(
            content=(choice.message.content or "") if choice else "",
            response_id=resp.id,
            response_model=resp.model,
            finish_reasons=[c.finish_reason for c in resp.choices if c.finish_reason],
            input_tokens=int(usage.prompt_tokens) if usage else 0,
            output_tokens=int(usage.completion_tokens) if usage else 0,
            latency_s=latency,
        )

    def _learn(
        self, model: str, messages: list[dict[str, Any]], inp: int, out: int, latency: float
    ) -> None:
        chars = _chars(messages)
        if inp <= 0 or chars <= 0 or latency <= 0:
            return
        cpt, tps = chars / inp, out / latency
        old = self._rates.get(model)
        if old is not None:
            cpt, tps = 0.8 * old[0] + 0.2 * cpt, 0.8 * old[1] + 0.2 * tps
        self._rates[model] = (cpt, tps)

    def estimate(
        self, llm: LLMResource, messages: list[dict[str, Any]], elapsed_s: float
    ) -> tuple[int, int]:
        """Estimated ``(input, output)`` tokens of a call cancelled after ``elapsed_s``.

        Input: the prompt's characters over the model's learnt characters per token (4 before
        any answered call). Output: ``elapsed_s`` times the model's learnt output tokens per
        second of latency, capped by ``max_tokens`` (0 before any answered call: no basis).
        The endpoint may have stopped generating when the connection closed, or not: these are
        estimates and are marked so everywhere they are reported.
        """
        cpt, tps = self._rates.get(llm.model, (4.0, 0.0))
        inp = max(1, round(_chars(messages) / cpt)) if messages else 0
        out = round(max(0.0, elapsed_s) * tps)
        if llm.max_tokens is not None:
            out = min(out, llm.max_tokens)
        return inp, out

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def _chars(messages: list[dict[str, Any]]) -> int:
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    return total
