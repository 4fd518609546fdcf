#!/usr/bin/env bash
# Builds the Leptos dashboard into frontend/dist (served by `lightpeft serve`): the wasm32
# target and the wasm-bindgen CLI matching Cargo.lock are installed when missing, then
# cargo builds the wasm, wasm-bindgen makes the JS glue, and assets/ is copied next to it.
# Idempotent; when nothing changed it takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
profile=wasm-release
out=frontend/dist

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

cargo build -p lightpeft-dashboard --target wasm32-unknown-unknown --profile "$profile"
wasm="$target_dir/wasm32-unknown-unknown/$profile/lightpeft-dashboard.wasm"

mkdir -p "$out"
if [ ! -f "$out/lightpeft_dashboard_bg.wasm" ] || [ "$wasm" -nt "$out/lightpeft_dashboard_bg.wasm" ]; then
  wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section --out-name lightpeft_dashboard --out-dir "$out" "$wasm"
fi
cp assets/index.html assets/style.css "$out/"
echo "dashboard built in $out ($(du -h "$out/lightpeft_dashboard_bg.wasm" | cut -f1) wasm)" >&2
