#!/bin/bash
# Requests per second of the read API on the embedded default, for comparing two checkouts:
#   scripts/read_bench.sh [TREE] [PORT]    (TREE: a checkout of this project, default: this one)
# Migrates a fresh SQLite database (or BENCH_DATABASE_URL's), runs the ETL once, starts gunicorn
# (GUNICORN_ARGS, default 2 workers) and runs wrk (Debian package `wrk`) for 8 s at 32
# connections on each URL.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
tree=${1:-$here}
port=${2:-8100}
bin="$here/.venv/bin"
command -v wrk >/dev/null || { echo "read_bench: install the Debian package wrk" >&2; exit 1; }
tmp=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$tmp"' EXIT
cd "$tree"
export DATABASE_URL="${BENCH_DATABASE_URL:-sqlite:///$tmp/etl.db}" LOG_LEVEL=WARNING
"$bin/flask" --app wsgi db upgrade >/dev/null 2>&1
"$bin/flask" --app wsgi etl run >/dev/null 2>&1 || true  # csv2 is PARTIAL by design
# shellcheck disable=SC2086  # GUNICORN_ARGS is a list of flags
"$bin/gunicorn" --bind "127.0.0.1:$port" ${GUNICORN_ARGS:---workers 2} --no-control-socket \
  wsgi:app >/dev/null 2>&1 &
server=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
for url in "/data?page_size=10" "/data?source=csv1&metric=price_usd&page_size=10" "/stats"; do
  wrk -t2 -c32 -d8s "http://127.0.0.1:$port$url" | awk -v url="$url" '/Requests\/sec/ {print url, $2}'
done
