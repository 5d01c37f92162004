#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server and SOURCED_TEST_PG pointing at it.
#
#   bash scripts/with-postgres.sh ctest --test-dir build --output-on-failure
#
# The cluster lives in a temporary directory, listens on 127.0.0.1 only, on a free port, with the default
# durable settings (fsync and synchronous_commit on), and is stopped and removed when the command ends.
# When SOURCED_TEST_PG is already set, the command runs against that server instead and nothing is started.
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user (created by
# the Debian package); as any other user it runs as that user.
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: bash scripts/with-postgres.sh COMMAND [ARGS...]" >&2
  exit 2
fi

if [ -n "${SOURCED_TEST_PG:-}" ]; then
  exec "$@"
fi

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

bindir="$(find_bindir || true)"
if [ -z "$bindir" ]; then
  echo "with-postgres: installing the Debian package postgresql" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends postgresql >/dev/null
  bindir="$(find_bindir)"
fi

# as_server CMD...: runs CMD as the user that owns the cluster.
if [ "$(id -u)" -eq 0 ]; then
  server_user=postgres
  if ! id "$server_user" >/dev/null 2>&1; then
    echo "with-postgres: running as root but there is no 'postgres' system user to run the server as" >&2
    exit 1
  fi
  as_server() { runuser -u "$server_user" -- "$@"; }
else
  server_user="$(id -un)"
  as_server() { "$@"; }
fi

tmp="$(mktemp -d -t sourced-pg.XXXXXX)"
chmod 700 "$tmp"
[ "$(id -u)" -eq 0 ] && chown "$server_user" "$tmp"
data="$tmp/data"
log="$tmp/server.log"
started=0

cleanup() {
  local status=$?
  if [ "$started" -eq 1 ]; then
    as_server "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_server "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$tmp/initdb.log" 2>&1 || {
  echo "with-postgres: initdb failed:" >&2
  cat "$tmp/initdb.log" >&2
  exit 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A random free port; if another process takes it between the check and the start, try again.
for attempt in 1 2 3 4 5 6 7 8; do
  port=$((20000 + RANDOM % 40000))
  port_in_use "$port" && continue
  if as_server "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$tmp' -c max_connections=300" \
      start >/dev/null 2>&1; then
    started=1
    break
  fi
done
if [ "$started" -ne 1 ]; then
  echo "with-postgres: the PostgreSQL server did not start; its log:" >&2
  cat "$log" >&2 || true
  exit 1
fi

export SOURCED_TEST_PG="postgres://postgres@127.0.0.1:$port/postgres"
echo "with-postgres: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') at $SOURCED_TEST_PG (data in $data)" >&2
set +e
"$@"
status=$?
set -e
exit "$status"
