"""The ``agentlightning.*`` attribute keys and span names: the one place they are spelled.

Why a module of its own at the package root: the instrumentation writes these keys, the store
files spans by them, the runner and the trainer read them back, and the dependencies between
those stages point one way (engine <- instrumentation -> exporter -> store <- runner <- trainer).
The store is the lowest stage, but the keys are Agent Lightning's conventions, not the store's
business; a module that imports nothing can be imported by every stage without bending that
direction (as :mod:`lightspan.config` is).

The values are Agent Lightning v0.3's (its tracers write them, its adapters and store read them):
never change them.
"""

from __future__ import annotations

ROLLOUT_ID = "agentlightning.rollout_id"
"""The rollout a span belongs to; the store drops spans without it (or without the attempt)."""
ATTEMPT_ID = "agentlightning.attempt_id"
"""The attempt of that rollout."""
SPAN_SEQUENCE_ID = "agentlightning.span_sequence_id"
"""Optional order of a span within its attempt (the store issues one when it is missing)."""

ANNOTATION_SPAN = "agentlightning.annotation"
"""Name of the span that carries a rollout's reward."""
REWARD_NAME = "agentlightning.reward.0.name"
"""The primary reward's name on the annotation span (``primary``)."""
REWARD_VALUE = "agentlightning.reward.0.value"
"""The primary reward's value (a float); Agent Lightning's ``find_final_reward`` reads it."""
