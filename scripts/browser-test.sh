#!/usr/bin/env bash
# The dashboard's browser test: builds the dashboard and the server, prepares a fresh data
# directory (a tiny random BERT and the bundled VADER data), picks a free port, and runs
# tests/browser/dashboard.test.mjs, which starts the server there and drives Debian's headless
# Chromium through the whole flow with playwright-core.
# Screenshots go to target/browser-screenshots/. Exits non-zero on any failure.
#
# LIGHTPEFT_TEST_SEED=DIR copies DIR's downloads/manifests into the data directory first, so
# that `assets fetch vader` only verifies them instead of downloading.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "installing Debian's chromium" >&2
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent)
fi

# DASHBOARD_TARGET_DIR: a separate target directory for the wasm build (default: cargo's).
CARGO_TARGET_DIR="${DASHBOARD_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}}" bash scripts/build-dashboard.sh
cargo build --quiet -p lightpeft
bin="$target_dir/debug/lightpeft"

data=$(mktemp -d)
log="$data/server.log"
cleanup() { rm -rf "$data"; }
trap cleanup EXIT

if [ -n "${LIGHTPEFT_TEST_SEED:-}" ]; then
  mkdir -p "$data/downloads" "$data/manifests"
  cp "$LIGHTPEFT_TEST_SEED"/downloads/vaderSentiment-* "$data/downloads/" 2>/dev/null || true
  cp -r "$LIGHTPEFT_TEST_SEED"/manifests/. "$data/manifests/" 2>/dev/null || true
fi
"$bin" --data-dir "$data" assets tiny --name tiny-bert
"$bin" --data-dir "$data" assets fetch vader

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
shots="$target_dir/browser-screenshots"
mkdir -p "$shots"
status=0
# The test starts (and once restarts) the server itself.
LIGHTPEFT_BIN="$bin" LIGHTPEFT_DATA="$data" PORT="$port" SERVER_LOG="$log" \
  CHROMIUM="$chromium" SCREENSHOT_DIR="$shots" MODEL=tiny-bert \
  node tests/browser/dashboard.test.mjs || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 60 lines) ---" >&2
  tail -n 60 "$log" >&2
fi
exit "$status"
