#!/usr/bin/env bash
# Command-line tools the guides use and their doc tests run (tests/docs): curl (probe the store),
# openssl (a self-signed certificate for the TLS example), sqlite3 (online backup). Installs
# the Debian packages of the missing ones only.
set -euo pipefail
missing=()
for tool in curl openssl sqlite3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "guide tools: curl, openssl, sqlite3 already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
