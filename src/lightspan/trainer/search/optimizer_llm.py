"""The optimizer's own LLM (APO's critic and editor): any OpenAI-compatible endpoint.

Why separate from the workflow's LLM calls: its tokens are the trainer's spend, reported
apart from the rollouts', and an unreachable optimizer must stop the run before any rollout
is spent, with a message naming the endpoint.
"""

from __future__ import annotations

from typing import Any

from lightspan.trainer.evaluation.evaluate import Spend


class OptimizerUnavailable(RuntimeError):
    """The optimizer endpoint cannot be reached or refuses requests."""


class OptimizerLLM:
    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key: str | None = None,
        max_tokens: int = 256,
        timeout_seconds: float = 120.0,
        price: tuple[float, float] | None = None,
    ) -> None:
        import openai

        self.endpoint = endpoint
        self.model = model
        self.max_tokens = max_tokens
        self.price = price
        self.spend = Spend()
        self._client = openai.AsyncOpenAI(
            base_url=endpoint,
            api_key=api_key or "not-needed",
            timeout=timeout_seconds,
            max_retries=1,
        )

    async def chat(self, prompt: str, *, temperature: float = 0.7) -> str:
        import openai

        try:
            resp = await self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=temperature,
                max_tokens=self.max_tokens,
            )
        except openai.OpenAIError as e:
            raise OptimizerUnavailable(
                f"optimizer LLM at {self.endpoint} (model {self.model!r}) failed: {e}"
            ) from e
        usage = resp.usage
        tin = int(usage.prompt_tokens) if usage else 0
        tout = int(usage.completion_tokens) if usage else 0
        self.spend.optimizer_calls += 1
        self.spend.optimizer_tokens += tin + tout
        if self.price is not None:
            self.spend.optimizer_cost += (tin * self.price[0] + tout * self.price[1]) / 1e6
        return (resp.choices[0].message.content or "") if resp.choices else ""

    async def check(self) -> None:
        """One tiny call, so a wrong endpoint fails before any rollout is spent."""
        await self.chat("Say OK.", temperature=0.0)

    async def aclose(self) -> None:
        await self._client.close()

    def __repr__(self) -> str:  # pragma: no cover - for logs
        return f"OptimizerLLM({self.endpoint!r}, {self.model!r})"


def trace_text(result: Any, limit: int = 1200) -> str:
    """A short, critic-sized rendering of one run: each LLM call's prompt and answer."""
    parts = [f"status={result.status} reward={result.reward:.2f}"]
    for c in result.calls:
        prompt = " | ".join(str(m.get("content", ""))[:300] for m in c.messages)
        parts.append(
            f"[{c.step}] prompt: {prompt}\n[{c.step}] answer: {(c.completion or '')[:300]}"
        )
    if result.error:
        parts.append(f"error: {result.error[:200]}")
    text = "\n".join(parts)
    return text[:limit]
