#!/usr/bin/env bash
# Build lightspan's OpenTelemetry Collector distribution (collector-config/manifest.yaml) into
# collector-config/bin/lightspan-otelcol with the OpenTelemetry Collector Builder.
#
# A no-op when the binary exists and was built from the current manifest (its sha256 is kept
# next to the binary); `--force` rebuilds anyway. GOMODCACHE/GOCACHE stay at Go's defaults so
# a second build on the same machine reuses downloads and compiled packages.
# The first build on 2 cores takes several minutes (mostly compiling contrib components).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

force=0
[ "${1:-}" = "--force" ] && force=1

GO="$(find_go)"
export PATH="$(dirname "$GO"):$PATH"
manifest="$CC_DIR/manifest.yaml"
want_hash="$(echo "builder $OTELCOL_RELEASE" | sha256_of "$manifest" -)"
hash_file="$OTELCOL_BIN.sha256"

if [ "$force" = 0 ] && [ -x "$OTELCOL_BIN" ] && [ "$(cat "$hash_file" 2>/dev/null)" = "$want_hash" ]; then
    log "collector: $OTELCOL_BIN is up to date with manifest.yaml, nothing to build"
    exit 0
fi
if [ "$force" = 0 ] && restore_from_cache "$OTELCOL_BIN" "$want_hash"; then
    exit 0
fi

mkdir -p "$BIN_DIR" "$BUILD_DIR"
start=$(date +%s)
builder="$BIN_DIR/ocb-$OTELCOL_RELEASE"
if [ ! -x "$builder" ]; then
    log "collector: installing the OpenTelemetry Collector Builder $OTELCOL_RELEASE"
    GOBIN="$BUILD_DIR/gobin" "$GO" install "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_RELEASE"
    mv "$BUILD_DIR/gobin/builder" "$builder"
fi

log "collector: generating sources and compiling (output_path $BUILD_DIR/otelcol; this takes minutes on a first build)"
# output_path in the manifest is relative to the working directory.
(cd "$CC_DIR" && "$builder" --config "$manifest")

built="$BUILD_DIR/otelcol/lightspan-otelcol"
[ -x "$built" ] || die "collector: the builder finished but $built is missing"
cp "$built" "$OTELCOL_BIN.tmp" && mv "$OTELCOL_BIN.tmp" "$OTELCOL_BIN"
echo "$want_hash" >"$hash_file"
save_to_cache "$OTELCOL_BIN" "$want_hash"
"$OTELCOL_BIN" --version >&2
log "collector: built $OTELCOL_BIN in $(( $(date +%s) - start ))s"
