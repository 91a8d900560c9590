# Shared by scripts/test and .ci/run: make sure a PostgreSQL server is
# reachable for the store's tests and CHATWORKER_TEST_POSTGRES_URL points at
# it (a database tests may create databases in).
#
# When CHATWORKER_TEST_POSTGRES_URL is already set, that server is used as it
# is. Otherwise Debian's PostgreSQL (installed with apt when missing) is
# started on a temporary directory and a free loopback port, and stopped
# when the calling script exits (stop_postgres; a script with an EXIT trap of
# its own calls it there).

postgres_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

ensure_postgres() {
  if [ -n "${CHATWORKER_TEST_POSTGRES_URL:-}" ]; then
    echo "Using PostgreSQL at ${CHATWORKER_TEST_POSTGRES_URL%%\?*}"
    return 0
  fi
  local bin
  if ! bin=$(postgres_bin); then
    echo "Installing PostgreSQL (Debian's postgresql package)"
    if [ "$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    else sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; fi
    bin=$(postgres_bin) || { echo "PostgreSQL's initdb is still missing" >&2; return 1; }
  fi
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  POSTGRES_DIR=$(mktemp -d -t chatworker-postgres.XXXXXX)
  # initdb refuses to run as root: as root, the server runs as Debian's
  # postgres user.
  POSTGRES_AS=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$POSTGRES_DIR"
    POSTGRES_AS=(runuser -u postgres --)
  fi
  POSTGRES_BIN=$bin
  "${POSTGRES_AS[@]}" "$bin/initdb" -D "$POSTGRES_DIR/data" -U chatworker --auth=trust -E UTF8 >"$POSTGRES_DIR/initdb.log" 2>&1 \
    || { echo "initdb failed:" >&2; tail -20 "$POSTGRES_DIR/initdb.log" >&2; return 1; }
  # Tests create and drop databases by the dozen: durability is not wanted.
  "${POSTGRES_AS[@]}" "$bin/pg_ctl" -D "$POSTGRES_DIR/data" -l "$POSTGRES_DIR/server.log" -w \
    -o "-p $port -k $POSTGRES_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null \
    || { echo "PostgreSQL did not start; its log:" >&2; tail -20 "$POSTGRES_DIR/server.log" >&2; return 1; }
  export CHATWORKER_TEST_POSTGRES_URL="postgres://chatworker@127.0.0.1:$port/postgres"
  echo "Started PostgreSQL at 127.0.0.1:$port (data and log: $POSTGRES_DIR)"
}

stop_postgres() {
  if [ -n "${POSTGRES_DIR:-}" ]; then
    "${POSTGRES_AS[@]}" "$POSTGRES_BIN/pg_ctl" -D "$POSTGRES_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$POSTGRES_DIR"
    POSTGRES_DIR=
  fi
}
