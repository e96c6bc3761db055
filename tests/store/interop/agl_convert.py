"""In the Agent Lightning 0.3 venv: what Agent Lightning stores for the sample spans.

``convert()`` returns {"from_opentelemetry": [...], "from_proto": [...]}; run as a script it
prints that as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from agentlightning.types.tracer import Span
from agentlightning.utils.otlp import spans_from_proto
from sample_spans import ATTEMPT_ID, ROLLOUT_ID, sample_readable_spans, sample_request


async def convert() -> dict:
    from_otel = [
        Span.from_opentelemetry(s, ROLLOUT_ID, ATTEMPT_ID, i + 1).model_dump(mode="json")
        for i, s in enumerate(sample_readable_spans())
    ]

    async def issue(pairs):  # the store issues 1, 2, ... in request order
        return list(range(1, len(pairs) + 1))

    from_proto = [
        s.model_dump(mode="json") for s in await spans_from_proto(sample_request(), issue)
    ]
    return {"from_opentelemetry": from_otel, "from_proto": from_proto}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(convert())))
