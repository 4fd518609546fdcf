#!/usr/bin/env bash
# Sets lightpeft up on this machine and runs it: fetches the bundled model and data, then
# starts the main job. Until the server lands this prints the engine's status.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet -p lightpeft -- assets fetch
exec cargo run --release --quiet -p lightpeft -- status "$@"
