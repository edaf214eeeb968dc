#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1; start the machine's own services if not.
set -euo pipefail

PG_PORT=${PG_PORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}

answers() {  # answers HOST PORT: true when something accepts TCP connections there
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

wait_for() {  # wait_for NAME PORT
  for _ in $(seq 1 30); do
    answers 127.0.0.1 "$2" && { echo "$1 is up on 127.0.0.1:$2"; return 0; }
    sleep 1
  done
  echo "$1 did not come up on 127.0.0.1:$2" >&2
  return 1
}

if ! answers 127.0.0.1 "$PG_PORT"; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  else
    echo "PostgreSQL is not answering on 127.0.0.1:$PG_PORT; start it (trust auth for user postgres)" >&2
    exit 1
  fi
fi
wait_for PostgreSQL "$PG_PORT"

if ! answers 127.0.0.1 "$REDIS_PORT"; then
  if command -v redis-server >/dev/null; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  else
    echo "Redis is not answering on 127.0.0.1:$REDIS_PORT; start it" >&2
    exit 1
  fi
fi
wait_for Redis "$REDIS_PORT"
