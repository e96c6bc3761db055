"""The agentlightning.* attribute keys and span names are spelled in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import lightspan.semconv as semconv
from lightspan.instrumentation import enrich, listener
from lightspan.store.intake import otlp

SRC = Path(__file__).resolve().parents[1] / "src" / "lightspan"
KEYS = {v for k, v in vars(semconv).items() if k.isupper() and isinstance(v, str)}


def test_the_stages_use_the_one_home():
    assert listener.ROLLOUT_ID is semconv.ROLLOUT_ID and listener.ATTEMPT_ID is semconv.ATTEMPT_ID
    assert enrich.ROLLOUT_ID is semconv.ROLLOUT_ID
    assert (otlp.ROLLOUT_ID_KEY, otlp.ATTEMPT_ID_KEY, otlp.SEQUENCE_ID_KEY) == (
        semconv.ROLLOUT_ID,
        semconv.ATTEMPT_ID,
        semconv.SPAN_SEQUENCE_ID,
    )


def test_no_other_module_spells_a_key():
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "semconv.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in KEYS:
                found.append(f"{rel}:{node.lineno}: {node.value}")
    assert not found, "use lightspan.semconv instead:\n" + "\n".join(found)
