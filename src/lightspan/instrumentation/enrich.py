"""Rollout ids on spans that other code opens inside a run (httpx, openai, user spans).

Why: the LightningStore files a span under a rollout by its ``agentlightning.rollout_id`` /
``agentlightning.attempt_id`` attributes and drops spans without them, so a span that user
code or another instrumentation opens below a workflow step must carry them too. The listener
puts the ids in the run's OpenTelemetry context (:data:`ROLLOUT_IDS_KEY`); this processor's
``on_start`` copies them onto any span started in that context that lacks them.
"""

from __future__ import annotations

from opentelemetry.context import Context, create_key, get_value
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

ROLLOUT_IDS_KEY = create_key("lightspan-rollout-ids")
"""Context key whose value is the run's ``{rollout_id attribute: id, attempt_id attribute: id}``."""
ROLLOUT_ID = "agentlightning.rollout_id"


class RolloutAttributesProcessor(SpanProcessor):
    """``on_start``: add the run's rollout ids to spans started inside a traced run."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        ids = get_value(ROLLOUT_IDS_KEY, parent_context)
        if ids is not None and span.attributes is not None and ROLLOUT_ID not in span.attributes:
            span.set_attributes(ids)  # type: ignore[arg-type]

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
