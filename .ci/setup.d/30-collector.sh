#!/usr/bin/env bash
# Build lightspan's OpenTelemetry Collector and Jaeger from their Go modules when the binaries
# are missing (tests/collector needs both). A no-op when collector-config/bin/ is up to date;
# a first build takes several minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
collector-config/scripts/build-collector.sh
collector-config/scripts/build-jaeger.sh
