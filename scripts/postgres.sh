#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests: a cluster in a temp dir, run by the
# unprivileged `postgres` user (root's by nobody else when not root),
# listening on loopback only, trusting the connections it gets there.
#   scripts/postgres.sh start   prints "ADMIN_URL DIR"
#   scripts/postgres.sh stop DIR
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "${1:-start}" in
start)
  dir=$(mktemp -d /tmp/paddock-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  chmod 700 "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync > "$dir/initdb.log"
  # fsync off: a test cluster is thrown away, never recovered.
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=400" \
    start > /dev/null
  echo "postgres://postgres@127.0.0.1:$port/postgres $dir"
  ;;
stop)
  dir=${2:?the cluster dir start printed}
  as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop > /dev/null || true
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start | stop DIR" >&2
  exit 2
  ;;
esac
