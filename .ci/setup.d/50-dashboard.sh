#!/usr/bin/env bash
# What the dashboard tests (tests/store/test_dashboard.py) need:
# - Debian's chromium, the headless browser they drive (installed when missing);
# - npm, which fetches the Monaco editor the dashboard's JSON viewers load (Debian's npm when
#   missing);
# - the dashboard itself (Agent Lightning 0.3.0's wheel via pip, Monaco via npm pack, both
#   sha256-pinned) in ~/.cache/lightspan/dashboard (or $LIGHTSPAN_DASHBOARD_DIR).
# Idempotent: each step does nothing when its result is already there.
set -euo pipefail
VENV="${VENV:-.venv}"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "dashboard: installing ${missing[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "dashboard: $(chromium --version 2>/dev/null || echo 'chromium: version unknown')"
"$VENV/bin/python" -m lightspan.store.server.dashboard_fetch
