#!/usr/bin/env bash
# Runs lightpeft's test suite: fetches the real model and data (idempotent, sha256-checked),
# runs every test of the backend crates, then the dashboard's browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -p lightpeft -- assets fetch
cargo test
if [ -f scripts/browser-test.sh ]; then
  bash scripts/browser-test.sh
fi
