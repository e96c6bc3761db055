"""Whole-trace head sampling that always keeps the rollouts a runner started.

Why a custom root sampler: a trace-id ratio keeps or drops whole traces (children follow the
root through ``ParentBased``), but training and validation rollouts must never be sampled out
or the optimizer waits for spans that never come. The listener marks those runs' root spans
with :data:`KEEP_ATTRIBUTE` at creation; the sampler keeps such roots and applies the ratio to
the rest. The same attribute drives the Collector's tail-sampling policy, so keep its name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.util.types import Attributes

log = logging.getLogger(__name__)

KEEP_ATTRIBUTE = "lightspan.sampling.keep"
"""Root-span attribute: ``True`` keeps the trace whatever the ratio (runner rollouts)."""


class RolloutAwareSampler(Sampler):
    """Root sampler: keep roots marked :data:`KEEP_ATTRIBUTE`, else a trace-id ratio."""

    def __init__(self, ratio: float) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"sampling ratio must be within [0, 1], got {ratio}")
        self.ratio = ratio
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: object = None,
    ) -> SamplingResult:
        if attributes and attributes.get(KEEP_ATTRIBUTE) is True:
            parent = get_current_span(parent_context).get_span_context()
            return SamplingResult(
                Decision.RECORD_AND_SAMPLE,
                attributes,
                parent.trace_state if parent.is_valid else None,
            )
        return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links)

    def get_description(self) -> str:
        return f"LightspanRolloutAware{{keep={KEEP_ATTRIBUTE},ratio={self.ratio}}}"


def make_sampler(ratio: float) -> Sampler:
    """Children follow their parent; roots are kept by mark or by ratio."""
    return ParentBased(RolloutAwareSampler(ratio))


def sampler_from_arg(arg: str) -> Sampler:
    """Entry point for ``OTEL_TRACES_SAMPLER=lightspan_rollout`` (the ARG is the ratio)."""
    try:
        ratio = float(arg) if arg and arg.strip() else 1.0
    except ValueError:
        log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number; using ratio 1.0", arg)
        ratio = 1.0
    return make_sampler(min(max(ratio, 0.0), 1.0))


_FIXED = {
    "always_on": 1.0,
    "parentbased_always_on": 1.0,
    "always_off": 0.0,
    "parentbased_always_off": 0.0,
}
_RATIO = {"traceidratio", "parentbased_traceidratio", "lightspan_rollout"}


def ratio_from_env(default: float, environ: Mapping[str, str] | None = None) -> tuple[float, str]:
    """The ratio that ``OTEL_TRACES_SAMPLER``/``_ARG`` ask for, else ``default``; and its source.

    Runner rollouts are kept whatever this says (also with ``always_off``): they are the
    training data. An unknown sampler name is reported and ignored.
    """
    env = os.environ if environ is None else environ
    name = (env.get("OTEL_TRACES_SAMPLER") or "").strip().lower()
    if not name:
        return default, "configuration"
    if name in _FIXED:
        return _FIXED[name], f"OTEL_TRACES_SAMPLER={name}"
    if name in _RATIO:
        arg = (env.get("OTEL_TRACES_SAMPLER_ARG") or "").strip()
        if not arg:
            return 1.0, f"OTEL_TRACES_SAMPLER={name}"
        try:
            ratio = float(arg)
        except ValueError:
            log.warning(
                "OTEL_TRACES_SAMPLER_ARG=%r is not a number; using the configured ratio %s",
                arg,
                default,
            )
            return default, "configuration"
        if not 0.0 <= ratio <= 1.0:
            log.warning("OTEL_TRACES_SAMPLER_ARG=%s is outside [0, 1]; clamped", ratio)
            ratio = min(max(ratio, 0.0), 1.0)
        return ratio, f"OTEL_TRACES_SAMPLER={name} OTEL_TRACES_SAMPLER_ARG={arg}"
    log.warning(
        "OTEL_TRACES_SAMPLER=%s is not supported by lightspan (use always_on, always_off, "
        "traceidratio, parentbased_traceidratio or lightspan_rollout); using the configured "
        "ratio %s",
        name,
        default,
    )
    return default, "configuration"
