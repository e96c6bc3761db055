#!/usr/bin/env bash
# Start, stop or inspect a local trace pipeline for a developer: Jaeger (in-memory, query API)
# and lightspan's Collector with a chosen configuration, all on 127.0.0.1.
#
#   pipeline.sh start [dev|production|debug|production-tier1-loadbalancer|PATH.yaml]  (default dev)
#   pipeline.sh stop
#   pipeline.sh status
#
# Builds the binaries first if they are missing (a no-op otherwise). Pid files and logs go to
# $LIGHTSPAN_PIPELINE_DIR (default .lightspan/pipeline/ in the repository). `start` returns once
# Jaeger's query API and the Collector's health_check answer, or fails with the log's tail.
# Ports come from the LIGHTSPAN_* variables listed in each configuration's header; this script
# reads the same variables (same defaults) to know where to probe.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE_DIR="${LIGHTSPAN_PIPELINE_DIR:-$REPO_ROOT/.lightspan/pipeline}"
JAEGER_QUERY="${LIGHTSPAN_JAEGER_QUERY_HTTP:-127.0.0.1:16686}"
OTELCOL_HEALTH="${LIGHTSPAN_OTELCOL_HEALTH:-127.0.0.1:13133}"
START_TIMEOUT="${LIGHTSPAN_PIPELINE_TIMEOUT:-30}"

http_ok() {  # http_ok URL: true when URL answers 2xx
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
    fi
}

running() {  # running NAME: true when NAME's pid file names a live process
    local pid_file="$STATE_DIR/$1.pid"
    [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

launch() {  # launch NAME URL CMD...: start CMD in the background, wait for URL
    local name="$1" url="$2"; shift 2
    if running "$name"; then
        log "$name already running (pid $(cat "$STATE_DIR/$name.pid"))"
        return 0
    fi
    log "starting $name: $*"
    nohup "$@" >"$STATE_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE_DIR/$name.pid"
    local deadline=$(( $(date +%s) + START_TIMEOUT ))
    until http_ok "$url"; do
        if ! running "$name"; then
            tail -n 30 "$STATE_DIR/$name.log" >&2
            die "$name exited during start-up (log: $STATE_DIR/$name.log)"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            tail -n 30 "$STATE_DIR/$name.log" >&2
            halt "$name"
            die "$name did not answer $url within ${START_TIMEOUT}s (log: $STATE_DIR/$name.log)"
        fi
        sleep 0.3
    done
    log "$name ready at $url (pid $(cat "$STATE_DIR/$name.pid"), log $STATE_DIR/$name.log)"
}

halt() {  # halt NAME: SIGTERM, then SIGKILL after 10 s
    local pid_file="$STATE_DIR/$1.pid"
    [ -f "$pid_file" ] || { log "$1 not running"; return 0; }
    local pid; pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        log "$1 stopped (pid $pid)"
    else
        log "$1 was not running (stale pid $pid)"
    fi
    rm -f "$pid_file"
}

config_path() {
    case "$1" in
        *.yaml|*.yml) echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")" ;;
        *) echo "$CC_DIR/$1.yaml" ;;
    esac
}

cmd="${1:-}"
case "$cmd" in
    start)
        config="$(config_path "${2:-dev}")"
        [ -f "$config" ] || die "no Collector configuration at $config"
        mkdir -p "$STATE_DIR"
        "$CC_DIR/scripts/build-collector.sh"
        case "$(basename "$config")" in
            debug.yaml|production-tier1-loadbalancer.yaml) ;;  # these export nowhere near Jaeger
            *)
                "$CC_DIR/scripts/build-jaeger.sh"
                launch jaeger "http://$JAEGER_QUERY/api/services" \
                    "$JAEGER_BIN" --config "$CC_DIR/jaeger/jaeger.yaml"
                ;;
        esac
        echo "$config" >"$STATE_DIR/otelcol.config"
        mkdir -p "$REPO_ROOT/.lightspan"  # debug.yaml's default span file lives there
        # Relative paths in a configuration (debug.yaml's span file) are relative to the repo.
        (cd "$REPO_ROOT" && launch otelcol "http://$OTELCOL_HEALTH/" "$OTELCOL_BIN" --config "$config")
        log "send OTLP to grpc ${LIGHTSPAN_OTELCOL_GRPC:-127.0.0.1:4317} or http ${LIGHTSPAN_OTELCOL_HTTP:-127.0.0.1:4318}"
        running jaeger && log "traces: http://$JAEGER_QUERY/api/traces?service=<service.name>"
        ;;
    stop)
        halt otelcol
        halt jaeger
        ;;
    status)
        rc=0
        for name in jaeger otelcol; do
            if running "$name"; then
                extra=""
                [ "$name" = otelcol ] && extra=" config $(cat "$STATE_DIR/otelcol.config" 2>/dev/null)"
                echo "$name: running (pid $(cat "$STATE_DIR/$name.pid"))$extra"
            else
                echo "$name: stopped"; rc=3
            fi
        done
        if running jaeger; then
            http_ok "http://$JAEGER_QUERY/api/services" && echo "jaeger query API: http://$JAEGER_QUERY answers" \
                || { echo "jaeger query API: http://$JAEGER_QUERY does not answer"; rc=1; }
        fi
        if running otelcol; then
            http_ok "http://$OTELCOL_HEALTH/" && echo "collector health: http://$OTELCOL_HEALTH/ healthy" \
                || { echo "collector health: http://$OTELCOL_HEALTH/ not healthy"; rc=1; }
        fi
        exit $rc
        ;;
    *)
        echo "usage: $0 start [dev|production|debug|production-tier1-loadbalancer|PATH.yaml] | stop | status" >&2
        exit 2
        ;;
esac
