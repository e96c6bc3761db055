#!/usr/bin/env bash
# Side virtualenv with Agent Lightning 0.3.0 for the store interoperability tests
# (tests/store/test_interop_agl.py). Kept out of the project's own dependencies: it is
# ~800 MB and pins its own versions of OpenTelemetry, FastAPI, etc.
#
# OpenTelemetry is pinned to 1.39.1, the release current when agentlightning 0.3.0 came out:
# from 1.40 on, the OTLP/HTTP exporter fixes its endpoint at construction, which silently
# breaks Agent Lightning 0.3's tracer (it redirects its exporter to the store's /v1/traces by
# assigning the exporter's endpoint), so spans would go to localhost:4318 instead.
#
# Idempotent: does nothing when the venv already has agentlightning 0.3.0 with that pin.
set -euo pipefail

AGL_VENV="${LIGHTSPAN_AGL_VENV:-$HOME/.cache/lightspan/agl-venv}"
AGL_VERSION="0.3.0"
OTEL_VERSION="1.39.1"
OTEL_CONTRIB_VERSION="0.60b1"
# APO's critic/editor templates are POML files: agl's APO imports `poml` (not an agl dependency).
POML_VERSION="0.0.8"
export LITELLM_LOCAL_MODEL_COST_MAP=True
export PIP_DISABLE_PIP_VERSION_CHECK=1

check() {
    "$AGL_VENV/bin/python" - <<PY 2>/dev/null
import importlib.metadata as m, sys
ok = (m.version("agentlightning") == "$AGL_VERSION" and m.version("opentelemetry-sdk") == "$OTEL_VERSION"
      and m.version("poml") == "$POML_VERSION")
sys.exit(0 if ok else 1)
PY
}

if [ -x "$AGL_VENV/bin/python" ] && check; then
    echo "agl interop venv: present at $AGL_VENV (agentlightning $AGL_VERSION, poml $POML_VERSION)"
    exit 0
fi

PY311="$(command -v python3.11 || true)"
if [ -z "$PY311" ]; then
    echo "agl interop venv: python3.11 not found; agentlightning $AGL_VERSION needs it" >&2
    exit 1
fi

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
for pkg in opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-exporter-otlp \
    opentelemetry-exporter-otlp-proto-common opentelemetry-exporter-otlp-proto-http \
    opentelemetry-exporter-otlp-proto-grpc; do
    echo "$pkg==$OTEL_VERSION" >> "$constraints"
done
echo "opentelemetry-semantic-conventions==$OTEL_CONTRIB_VERSION" >> "$constraints"
echo "opentelemetry-instrumentation==$OTEL_CONTRIB_VERSION" >> "$constraints"

if [ ! -x "$AGL_VENV/bin/python" ]; then
    echo "agl interop venv: creating $AGL_VENV with agentlightning==$AGL_VERSION (a few minutes)"
    mkdir -p "$(dirname "$AGL_VENV")"
    "$PY311" -m venv "$AGL_VENV"
    "$AGL_VENV/bin/pip" install -q --upgrade pip
fi
"$AGL_VENV/bin/pip" install -q -c "$constraints" "agentlightning==$AGL_VERSION" \
    opentelemetry-sdk opentelemetry-exporter-otlp-proto-http "poml==$POML_VERSION"
check || { echo "agl interop venv: agentlightning $AGL_VERSION did not install" >&2; exit 1; }
echo "agl interop venv: ready"
