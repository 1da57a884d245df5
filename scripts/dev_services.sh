#!/usr/bin/env bash
# Starts or stops a Redis and a PostgreSQL for development, on loopback only, with their
# data under data/dev-services/ (git-ignored). Needs Debian's redis-server and postgresql
# (`make system-deps`). PostgreSQL refuses to run as root, so as root it runs as the
# `postgres` user.
#
#   scripts/dev_services.sh start    # then export the two variables it prints
#   scripts/dev_services.sh status
#   scripts/dev_services.sh stop
#
# Ports: REDIS_PORT (default 6379) and PG_PORT (default 5432).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD/data/dev-services"
REDIS_PORT="${REDIS_PORT:-6379}"
PG_PORT="${PG_PORT:-5432}"
PG_DATA="$ROOT/postgres"
PG_DATABASE=llm_manager

pg_bin() {
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$found" ]; then
    echo "PostgreSQL is not installed: run \`make system-deps\`" >&2
    exit 1
  fi
  echo "$found"
}

# Runs a command as the postgres user when we are root (PostgreSQL refuses root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

redis_running() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1
}

start_redis() {
  command -v redis-server >/dev/null || { echo "redis-server is not installed: run \`make system-deps\`" >&2; exit 1; }
  if redis_running; then
    echo "redis: already running on 127.0.0.1:$REDIS_PORT"
    return
  fi
  mkdir -p "$ROOT/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$ROOT/redis" --daemonize yes \
    --pidfile "$ROOT/redis/redis.pid" --logfile "$ROOT/redis/redis.log" --save "" --appendonly no
  for _ in $(seq 50); do redis_running && break; sleep 0.1; done
  redis_running || { echo "redis did not start; see $ROOT/redis/redis.log" >&2; exit 1; }
  echo "redis: started on 127.0.0.1:$REDIS_PORT"
}

start_postgres() {
  local bin
  bin="$(pg_bin)"
  mkdir -p "$ROOT"
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    mkdir -p "$PG_DATA"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PG_DATA"
    as_pg "$bin/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C >/dev/null
  fi
  if as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    echo "postgres: already running on 127.0.0.1:$PG_PORT"
  else
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/postgres.log" -w \
      -o "-p $PG_PORT -h 127.0.0.1 -k $PG_DATA" start >/dev/null
    echo "postgres: started on 127.0.0.1:$PG_PORT"
  fi
  if ! "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'" | grep -q 1; then
    "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE $PG_DATABASE"
  fi
}

stop_all() {
  if redis_running; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    echo "redis: stopped"
  fi
  if [ -s "$PG_DATA/PG_VERSION" ] && as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
    echo "postgres: stopped"
  fi
}

print_env() {
  echo
  echo "export LLM_CACHE_STORE=redis://127.0.0.1:$REDIS_PORT/0"
  echo "export LLM_CONVERSATION_STORE=postgresql://postgres@127.0.0.1:$PG_PORT/$PG_DATABASE"
}

case "${1:-}" in
  start) start_redis; start_postgres; print_env ;;
  stop) stop_all ;;
  status)
    if redis_running; then echo "redis: running on 127.0.0.1:$REDIS_PORT"; else echo "redis: stopped"; fi
    if [ -s "$PG_DATA/PG_VERSION" ] && as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
      echo "postgres: running on 127.0.0.1:$PG_PORT"
    else
      echo "postgres: stopped"
    fi
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
