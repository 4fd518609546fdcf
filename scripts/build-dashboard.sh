#!/usr/bin/env bash
# Builds the Leptos dashboard into frontend/dist, whose generated files the repository keeps
# and the server binary embeds (so a user builds only the server): the wasm32 target and the
# wasm-bindgen CLI matching Cargo.lock are installed when missing, then cargo builds the wasm,
# wasm-bindgen makes the JS glue, and assets/ is copied next to it. Idempotent; when nothing
# changed it takes a few seconds.
#
#   bash scripts/build-dashboard.sh           # rebuild frontend/dist (commit it with the source)
#   bash scripts/build-dashboard.sh --check   # fail unless frontend/dist is what the source builds
#
# The build is reproducible: paths are remapped (the checkout's folder and Cargo's home do
# not reach the wasm) and wasm-bindgen drops its name and producer sections, so the same
# source, Cargo.lock and toolchain give the same bytes on any machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
profile=wasm-release
out=frontend/dist
staged="$target_dir/dashboard-staged"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

want=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "installing wasm-bindgen-cli $want (found: ${have:-none})" >&2
  # Not --locked: its lockfile pins a webpki-roots release the registry no longer offers.
  cargo install wasm-bindgen-cli --version "$want" --force
fi

cargo_home="${CARGO_HOME:-$HOME/.cargo}"
# Only the wasm target's crates see these flags (cargo keeps host build scripts apart when a
# --target is given), so the server's build is untouched.
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="--remap-path-prefix=$root=/lightpeft --remap-path-prefix=$cargo_home=/cargo" \
  cargo build -p lightpeft-dashboard --target wasm32-unknown-unknown --profile "$profile"
wasm="$target_dir/wasm32-unknown-unknown/$profile/lightpeft-dashboard.wasm"

rm -rf "$staged"
mkdir -p "$staged"
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-name lightpeft_dashboard --out-dir "$staged" "$wasm"
cp assets/index.html assets/style.css "$staged/"

# The generated files are kept in the repository; index.html and style.css are assets/'s,
# copied next to them for `lightpeft serve --dashboard-dir frontend/dist`.
generated="lightpeft_dashboard.js lightpeft_dashboard_bg.wasm"
if $check; then
  stale=""
  for f in $generated; do
    cmp -s "$staged/$f" "$out/$f" || stale="$stale $f"
  done
  if [ -n "$stale" ]; then
    echo "frontend/dist is not what the source builds (differs:$stale)." >&2
    echo "Run bash scripts/build-dashboard.sh and commit frontend/dist with the change." >&2
    exit 1
  fi
  echo "frontend/dist is what the source builds" >&2
  exit 0
fi

mkdir -p "$out"
for f in $generated index.html style.css; do
  cmp -s "$staged/$f" "$out/$f" || cp "$staged/$f" "$out/$f"
done
echo "dashboard built in $out ($(du -h "$out/lightpeft_dashboard_bg.wasm" | cut -f1) wasm); the server embeds it at its next build" >&2
