"""Price tables: one from CPU-seconds per token measured here, one from public list prices.

Why measured CPU time: on this machine a model's cost is the CPU it burns, and tiers differ
by far more in CPU per token than in any one list price. The model server runs as a child
process alone; its user+system CPU time (``/proc/<pid>/stat``) is read around two kinds of
requests: long prompts with one output token (CPU per prompt token) and short prompts that
generate a fixed number of tokens (CPU per output token, after removing the prompt's share).
Price per million tokens = CPU-seconds per token x 1e6 x ``CPU_HOUR_USD`` / 3600.

Why a second table: the conclusion must not hinge on one table. Public serverless prices
for models of similar size are flat per size tier, so under them only token counts matter.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from lightspan.engine import Price, PriceTable
from lightspan.localllm.process import LocalModelProcess

CPU_HOUR_USD = 0.04
"""USD per CPU-hour used to turn measured CPU time into a price (about an on-demand cloud
vCPU-hour); only ratios between models matter for the cuts, not this constant."""

PUBLIC_SOURCE = (
    "Fireworks AI serverless list price by base model size, 'up to 16B' parameters: "
    "USD 0.20 per 1M tokens, input and output alike (https://fireworks.ai/pricing, stored copy "
    "read on 2026-11-28; smaller tiers are not listed there)"
)
PUBLIC_PRICES: dict[str, Price] = {
    "smollm2-135m": Price(0.20, 0.20),
    "qwen2.5-coder-0.5b": Price(0.20, 0.20),
    "qwen2.5-coder-1.5b": Price(0.20, 0.20),
}

_LONG_PROMPT = " ".join(
    f"Item {i}: the warehouse in city {i % 7} shipped {i * 3} boxes on day {i % 5}."
    for i in range(40)
)


@dataclass(slots=True)
class Measured:
    model: str
    cpu_s_per_input_token: float
    cpu_s_per_output_token: float
    input_tokens: int
    output_tokens: int
    threads: int
    date: str
    loadavg_1m: float

    def price(self, usd_per_cpu_hour: float = CPU_HOUR_USD) -> Price:
        per_s = usd_per_cpu_hour / 3600 * 1e6
        return Price(self.cpu_s_per_input_token * per_s, self.cpu_s_per_output_token * per_s)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_model(
    model: str, *, threads: int = 1, requests: int = 2, gen_tokens: int = 64
) -> Measured:
    """Serve ``model`` alone and measure its CPU-seconds per input and per output token."""
    with LocalModelProcess(model, threads=threads, parallel=1, fetch_missing=True) as srv:
        assert srv.proc is not None
        pid = srv.proc.pid
        with httpx.Client(base_url=srv.base_url, timeout=600) as client:

            def call(prompt: str, max_tokens: int, ignore_eos: bool) -> dict[str, Any]:
                body = {
                    "model": srv.model,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "ignore_eos": ignore_eos,
                }
                r = client.post("/chat/completions", json=body)
                r.raise_for_status()
                return r.json()["usage"]

            call("warm up", 2, False)
            # Prompt side: distinct long prompts (no prompt cache hits), one output token.
            c0, p_in, p_out = _cpu_seconds(pid), 0, 0
            for i in range(requests):
                u = call(f"Request {i}. {_LONG_PROMPT}\nSummarize.", 1, False)
                p_in += u["prompt_tokens"]
                p_out += u["completion_tokens"]
            cpu_prompt = _cpu_seconds(pid) - c0
            per_in = cpu_prompt / max(p_in, 1)
            # Output side: short prompts that generate exactly gen_tokens tokens.
            c0, g_in, g_out = _cpu_seconds(pid), 0, 0
            for i in range(requests):
                u = call(f"Count upwards from {i * 100}.", gen_tokens, True)
                g_in += u["prompt_tokens"]
                g_out += u["completion_tokens"]
            cpu_gen = _cpu_seconds(pid) - c0
            per_out = max(cpu_gen - g_in * per_in, 0.0) / max(g_out, 1)
    return Measured(
        model=model,
        cpu_s_per_input_token=per_in,
        cpu_s_per_output_token=per_out,
        input_tokens=p_in + g_in,
        output_tokens=p_out + g_out,
        threads=threads,
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        loadavg_1m=os.getloadavg()[0],
    )


def measured_prices(
    models: list[str], cache_file: Path, *, remeasure: bool = False, threads: int = 1
) -> dict[str, Measured]:
    """Measurements for ``models``, from ``cache_file`` when present (one server at a time)."""
    cached: dict[str, Any] = {}
    if cache_file.exists() and not remeasure:
        cached = json.loads(cache_file.read_text())
    out: dict[str, Measured] = {}
    for m in models:
        if m in cached and cached[m].get("threads") == threads:
            out[m] = Measured(**cached[m])
        else:
            out[m] = measure_model(m, threads=threads)
            cached[m] = asdict(out[m])
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(cached, indent=1))
    return out


def cpu_price_table(measured: dict[str, Measured]) -> PriceTable:
    return PriceTable({m: x.price() for m, x in measured.items()})


def public_price_table() -> PriceTable:
    return PriceTable(PUBLIC_PRICES)
