# Shared helpers for the collector-config scripts (sourced, not run).
# Why: every script needs the same paths and the same Go toolchain lookup.

CC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_ROOT="$(cd "$CC_DIR/.." && pwd)"
BIN_DIR="$CC_DIR/bin"
BUILD_DIR="$CC_DIR/build"
OTELCOL_BIN="$BIN_DIR/lightspan-otelcol"
JAEGER_BIN="$BIN_DIR/jaeger"
# One release for the builder and every component in manifest.yaml.
OTELCOL_RELEASE="v0.161.0"
JAEGER_VERSION="v1.76.0"

# The builds run inside this git checkout: no VCS stamping (fails on checkouts git distrusts),
# and never download another Go toolchain (the proxy may refuse it; ours is new enough).
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# find_go: prints the path of a Go toolchain (PATH first, then the machine's /usr/local/go).
find_go() {
    if command -v go >/dev/null 2>&1; then
        command -v go
    elif [ -x /usr/local/go/bin/go ]; then
        echo /usr/local/go/bin/go
    else
        die "no Go toolchain found (looked in PATH and /usr/local/go/bin); the Collector and Jaeger are built from Go modules, install Go >= 1.24"
    fi
}

sha256_of() { cat "$@" | sha256sum | cut -d" " -f1; }  # of the contents, not the names

# Built binaries are also kept in a per-machine cache outside the checkout, keyed by their
# build hash, so a fresh clone on the same machine (CI's) copies them instead of rebuilding.
BIN_CACHE="${LIGHTSPAN_BIN_CACHE:-$HOME/.cache/lightspan/bin}"

# restore_from_cache BIN HASH: copy a cached build of BIN with HASH into place; 0 if it did.
restore_from_cache() {
    local bin="$1" hash="$2" cached
    cached="$BIN_CACHE/$(basename "$bin")-$hash"
    [ -x "$cached" ] || return 1
    mkdir -p "$(dirname "$bin")"
    cp "$cached" "$bin.tmp" && mv "$bin.tmp" "$bin"
    echo "$hash" >"$bin.sha256"
    log "$(basename "$bin"): restored from the machine's build cache ($cached)"
}

# save_to_cache BIN HASH: keep a copy of a fresh build for later clones on this machine.
save_to_cache() {
    local bin="$1" hash="$2"
    mkdir -p "$BIN_CACHE"
    cp "$bin" "$BIN_CACHE/$(basename "$bin")-$hash.tmp"
    mv "$BIN_CACHE/$(basename "$bin")-$hash.tmp" "$BIN_CACHE/$(basename "$bin")-$hash"
}
