#!/usr/bin/env bash
# Runs lightpeft's test suite: fetches the real model and data (idempotent, sha256-checked),
# checks that the planner builds for wasm32, runs every test of the backend crates, fuzzes the
# API from its OpenAPI document, then runs the dashboard's browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -p lightpeft -- assets fetch
# The planner is shared with the wasm dashboard, so it must keep building for wasm32.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
cargo build --quiet -p lightpeft-plan --target wasm32-unknown-unknown
cargo test
# The REST API against its own OpenAPI document (schemathesis, bounded examples, fixed seed).
bash scripts/api-fuzz.sh
if [ -f scripts/browser-test.sh ]; then
  bash scripts/browser-test.sh
fi
