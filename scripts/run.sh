#!/usr/bin/env bash
# Sets lightpeft up on this machine and runs it: builds the server (which carries the built
# dashboard, so no wasm toolchain is needed), fetches the bundled model and data
# (sha256-checked, idempotent) and starts the server on http://127.0.0.1:8080.
# Extra arguments go to `lightpeft serve` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p lightpeft
./target/release/lightpeft assets fetch
echo "the dashboard opens at the address the server prints next (Ctrl-C stops; running jobs can be resumed later)" >&2
exec ./target/release/lightpeft serve "$@"
