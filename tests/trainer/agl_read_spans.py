"""Run in the Agent Lightning 0.3 venv: read trainer rollouts' spans with agl's own client and
adapters. Usage: ``python agl_read_spans.py http://127.0.0.1:PORT ROLLOUT_ID...``. Prints one
JSON object: per rollout, agl's final reward, its TraceToMessages and TracerTraceToTriplet
results (sizes and the first prompt/answer)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from agentlightning.adapter import TracerTraceToTriplet, TraceToMessages
from agentlightning.emitter.reward import find_final_reward
from agentlightning.store.client_server import LightningStoreClient


async def main(address: str, rollout_ids: list[str]) -> dict:
    client = LightningStoreClient(address, retry_delays=(0.2,), health_retry_delays=(0.1,))
    out = {}
    for rid in rollout_ids:
        spans = await client.query_spans(rid)
        msgs = TraceToMessages().adapt(spans)
        triplets = TracerTraceToTriplet().adapt(spans)
        first = msgs[0] if msgs else {}
        out[rid] = {
            "spans": len(spans),
            "reward": find_final_reward(spans),
            "messages": len(msgs),
            "first_messages": json.loads(json.dumps(first, default=str)),
            "triplets": len(triplets),
            "triplet_rewards": [t.reward for t in triplets],
        }
    await client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2:])), default=str))
