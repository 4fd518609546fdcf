#!/usr/bin/env bash
# Runs lightpeft's test suite: fetches the real model and data (idempotent, sha256-checked),
# checks that the planner builds for wasm32, starts a throwaway PostgreSQL server and an
# S3-compatible one (moto), runs every test of the backend crates (on SQLite, then the server
# suites again on PostgreSQL), fuzzes the API from its OpenAPI document, then runs the
# dashboard's browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -p lightpeft -- assets fetch
# The planner is shared with the wasm dashboard, so it must keep building for wasm32.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
cargo build --quiet -p lightpeft-plan --target wasm32-unknown-unknown
# A failed start stops here (an assignment keeps the exit status; `eval "$(…)"` would not).
postgres_env=$(bash scripts/postgres.sh start)
eval "$postgres_env"
trap 'bash scripts/postgres.sh stop "$LIGHTPEFT_TEST_POSTGRES_DIR"' EXIT
# An S3-compatible server (moto) for the object-store artifacts.
s3_env=$(bash scripts/s3.sh start)
eval "$s3_env"
trap 'bash scripts/s3.sh stop "$LIGHTPEFT_TEST_S3_DIR"; bash scripts/postgres.sh stop "$LIGHTPEFT_TEST_POSTGRES_DIR"' EXIT
cargo test
# The server's end-to-end suites once more with every server's store in PostgreSQL. The 413
# test counts rows in the SQLite file directly, so it runs on SQLite only (above).
LIGHTPEFT_TEST_STORE=postgres cargo test -p lightpeft \
  --test server_api --test server_integrity --test server_resume --test cli_server_parity --test studies \
  -- --skip over_a_socket_an_oversized_body
# The REST API against its own OpenAPI document (schemathesis, bounded examples, fixed seed).
bash scripts/api-fuzz.sh
# The dashboard the server embeds (frontend/dist, kept in the repository) must be exactly what
# its source builds.
bash scripts/build-dashboard.sh --check
if [ -f scripts/browser-test.sh ]; then
  bash scripts/browser-test.sh
fi
