#!/usr/bin/env bash
# A throwaway S3-compatible server for the tests: moto's server (PyPI, pinned, in a venv under
# the target directory) on a free loopback port, with one bucket and random credentials.
#
#   eval "$(bash scripts/s3.sh start)"   # exports the AWS_* variables lightpeft's
#                                        # --artifacts s3://… reads, LIGHTPEFT_TEST_S3_BUCKET
#                                        # and LIGHTPEFT_TEST_S3_DIR
#   bash scripts/s3.sh stop "$LIGHTPEFT_TEST_S3_DIR"
#
# Only `export` lines go to stdout; everything else goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac

version=5.2.5
venv="$target_dir/moto-$version"

start() {
  if [ ! -x "$venv/bin/moto_server" ]; then
    echo "installing moto $version into $venv" >&2
    python3 -m venv "$venv" 2>/dev/null || {
      apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
      python3 -m venv "$venv"
    }
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version" >&2
  fi
  local dir port bucket key secret
  dir=$(mktemp -d /tmp/lightpeft-s3.XXXXXX)
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/server.log" 2>&1 &
  echo $! >"$dir/pid"
  bucket=lightpeft-test
  key=$(python3 -c 'import secrets; print("AK" + secrets.token_hex(8).upper())')
  secret=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
  # Up, then the bucket (moto answers CreateBucket once it listens).
  python3 - "$port" "$bucket" <<'EOF' >&2
import sys, time, urllib.request
port, bucket = sys.argv[1], sys.argv[2]
deadline = time.time() + 60
while True:
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
        urllib.request.urlopen(request, timeout=5).read()
        break
    except Exception as e:
        if time.time() > deadline:
            sys.exit(f"moto did not answer on port {port}: {e}")
        time.sleep(0.2)
EOF
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$port"
  echo "export AWS_ALLOW_HTTP=true"
  echo "export AWS_REGION=us-east-1"
  echo "export AWS_ACCESS_KEY_ID=$key"
  echo "export AWS_SECRET_ACCESS_KEY=$secret"
  echo "export LIGHTPEFT_TEST_S3_BUCKET=$bucket"
  echo "export LIGHTPEFT_TEST_S3_DIR=$dir"
}

stop() {
  local dir=$1
  [ -f "$dir/pid" ] || { echo "no S3 server in $dir" >&2; exit 1; }
  kill "$(cat "$dir/pid")" 2>/dev/null || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:?the folder start printed}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
