#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document with schemathesis (PyPI, pinned, in a
# venv under the target directory): a fresh data directory with a tiny random BERT and the
# bundled VADER data, the real server on a free port, every operation tried with generated
# valid and invalid requests and in stateful sequences (create → estimate → plans …).
#
# Checks: every schemathesis check except `positive_data_acceptance`, which expects every
# schema-valid request to be accepted; the API has rules no schema can state (the model must
# exist in the data directory, `to` not before `from`, the run must fit the memory budget), so
# such requests are rightly refused. What remains fails on a 5xx, a status or content type the
# document does not list, a response that does not match its schema, an invalid request that
# is accepted, or a 405 answered otherwise.
#
# FUZZ_EXAMPLES (default 5) bounds the examples per operation; FUZZ_SEED (default 1) fixes
# the generated cases, so a failure reproduces.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac

version=4.32.5
venv="$target_dir/schemathesis-$version"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

cargo build --quiet -p lightpeft
bin="$target_dir/debug/lightpeft"
data=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

"$bin" --data-dir "$data" assets tiny --name tiny-bert >/dev/null
# The bundled data: the archive `assets fetch` already downloaded (test.sh runs it) is only
# verified and unpacked here, not downloaded again.
home="${LIGHTPEFT_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/lightpeft}"
mkdir -p "$data/downloads" "$data/manifests"
cp "$home"/downloads/vaderSentiment-* "$data/downloads/" 2>/dev/null || true
cp -r "$home"/manifests/. "$data/manifests/" 2>/dev/null || true
"$bin" --data-dir "$data" assets fetch vader >/dev/null

log="$data/server.log"
RAYON_NUM_THREADS=1 "$bin" --data-dir "$data" serve --port 0 --jobs 1 \
  --dashboard-dir "$data/no-dashboard" >"$log" 2>&1 &
server=$!
base=""
for _ in $(seq 1 100); do
  base=$(sed -n 's/^lightpeft listening on //p' "$log" | head -n 1)
  [ -n "$base" ] && break
  sleep 0.1
done
[ -n "$base" ] || { echo "the server did not start:" >&2; cat "$log" >&2; exit 1; }

status=0
# One worker: hypothesis parses lambdas' source with `ast.parse`, which CPython 3.11 cannot
# run on two threads at once ("SystemError: AST constructor recursion depth mismatch", seen
# in CI with --workers 2; CPython gh-106905).
"$venv/bin/schemathesis" run "$base/api/v1/openapi.json" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "${FUZZ_EXAMPLES:-5}" --seed "${FUZZ_SEED:-1}" --workers 1 \
  --no-color || status=$?

# The server must have survived it: still answering, and no panic in its log.
if ! curl -fsS "$base/api/v1/health" >/dev/null; then
  echo "the server stopped answering after the fuzzing" >&2
  status=1
fi
if grep -q "panicked" "$log"; then
  echo "the server panicked while fuzzed:" >&2
  grep -B2 -A8 "panicked" "$log" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 40 lines) ---" >&2
  tail -n 40 "$log" >&2
fi
exit "$status"
