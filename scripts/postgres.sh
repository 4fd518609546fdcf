#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, from Debian's packages (installed when missing,
# if run as root): a new cluster in a temporary folder, run by a non-root user, listening on a
# free loopback port, its superuser `lightpeft` with a random password.
#
#   eval "$(bash scripts/postgres.sh start)"   # exports LIGHTPEFT_TEST_POSTGRES_URL (no database)
#                                              # and LIGHTPEFT_TEST_POSTGRES_DIR
#   bash scripts/postgres.sh stop "$LIGHTPEFT_TEST_POSTGRES_DIR"
#
# Only `export` lines go to stdout; everything else goes to stderr.
set -euo pipefail

# The newest installed server's programs.
bin_dir() {
  find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1
}

# Runs a command as the cluster's owner (only root has to switch users).
as_owner() {
  local owner=$1
  shift
  if [ "$(id -u)" = 0 ]; then
    # From a folder the owner may enter (the checkout may be root's alone).
    (cd / && runuser -u "$owner" -- "$@")
  else
    "$@"
  fi
}

start() {
  local bin
  bin=$(bin_dir)
  if [ -z "$bin" ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "PostgreSQL is not installed: apt-get install postgresql (as root)" >&2
      exit 1
    fi
    echo "installing Debian's postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq postgresql >&2 ||
      { apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2; }
    bin=$(bin_dir)
  fi
  local owner dir password port
  owner=$(id -un)
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root.
    owner=lightpeft-pg
    id -u "$owner" >/dev/null 2>&1 ||
      useradd --system --no-create-home --shell /usr/sbin/nologin "$owner"
  fi
  dir=$(mktemp -d /tmp/lightpeft-pg.XXXXXX)
  chmod 700 "$dir"
  password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  printf '%s\n' "$password" >"$dir/password"
  if [ "$(id -u)" = 0 ]; then
    chown -R "$owner" "$dir"
  fi
  as_owner "$owner" "$bin/initdb" -D "$dir/data" -U lightpeft --pwfile="$dir/password" \
    --auth=scram-sha-256 --encoding=UTF8 --locale=C --no-sync >&2
  rm -f "$dir/password"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # Test data only: no fsync. The socket lives in the cluster's own folder.
  as_owner "$owner" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" \
    start >&2
  echo "export LIGHTPEFT_TEST_POSTGRES_URL=postgres://lightpeft:$password@127.0.0.1:$port"
  echo "export LIGHTPEFT_TEST_POSTGRES_DIR=$dir"
}

stop() {
  local dir=$1 bin owner
  [ -d "$dir/data" ] || { echo "no cluster in $dir" >&2; exit 1; }
  bin=$(bin_dir)
  owner=$(stat -c %U "$dir/data")
  as_owner "$owner" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:?usage: postgres.sh stop DIR}" ;;
  *)
    echo "usage: postgres.sh start | stop DIR" >&2
    exit 2
    ;;
esac
