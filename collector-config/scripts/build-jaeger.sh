#!/usr/bin/env bash
# Build Jaeger (all-in-one `jaeger` binary, v1.76.0) from its Go module into
# collector-config/bin/jaeger.
#
# Jaeger is a tool of a tiny module under collector-config/build/jaeger (git-ignored):
# `go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@v1.76.0` pins it and its dependency
# graph, then `go build` compiles it. Without the `ui` build tag the web page is a placeholder,
# but the query API (/api/traces, /api/v3/traces, /api/services) and OTLP intake are complete.
# A no-op when the binary exists for this version; `--force` rebuilds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

force=0
[ "${1:-}" = "--force" ] && force=1

GO="$(find_go)"
want_hash="$(echo "jaeger $JAEGER_VERSION" | sha256_of -)"
hash_file="$JAEGER_BIN.sha256"

if [ "$force" = 0 ] && [ -x "$JAEGER_BIN" ] && [ "$(cat "$hash_file" 2>/dev/null)" = "$want_hash" ]; then
    log "jaeger: $JAEGER_BIN ($JAEGER_VERSION) is up to date, nothing to build"
    exit 0
fi
if [ "$force" = 0 ] && restore_from_cache "$JAEGER_BIN" "$want_hash"; then
    exit 0
fi

mod_dir="$BUILD_DIR/jaeger"
mkdir -p "$BIN_DIR" "$mod_dir"
start=$(date +%s)
cd "$mod_dir"
if [ ! -f go.mod ] || ! grep -q "github.com/jaegertracing/jaeger $JAEGER_VERSION" go.mod; then
    log "jaeger: resolving github.com/jaegertracing/jaeger@$JAEGER_VERSION in $mod_dir"
    rm -f go.mod go.sum
    "$GO" mod init lightspan.local/jaeger-build >/dev/null 2>&1
    "$GO" get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
fi
log "jaeger: compiling (this takes minutes on a first build)"
"$GO" build -trimpath -o "$JAEGER_BIN.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$JAEGER_BIN.tmp" "$JAEGER_BIN"
echo "$want_hash" >"$hash_file"
save_to_cache "$JAEGER_BIN" "$want_hash"
log "jaeger: built $JAEGER_BIN in $(( $(date +%s) - start ))s"
