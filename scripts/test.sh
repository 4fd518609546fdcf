#!/usr/bin/env bash
# Runs lightpeft's test suite: fetches the real model and data (idempotent, sha256-checked),
# then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -p lightpeft -- assets fetch
cargo test --workspace
