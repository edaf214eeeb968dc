#!/bin/sh
# Start one role of Kasparro: apply migrations, then run the role.
#   api     gunicorn on 0.0.0.0:$PORT, after queueing an initial ETL pass in the background
#   worker  a Celery worker, node worker@<host name> (what the compose health check pings)
#   beat    the Celery beat scheduler (run exactly one)
#   flower  Celery's monitor, behind basic auth (FLOWER_BASIC_AUTH=user:password)
#   any other command is run as given, after migrations (e.g. flask --app wsgi etl status)
set -eu

role="${1:-api}"
[ "$#" -gt 0 ] && shift

migrate() {
  tries=0
  until flask --app wsgi db upgrade; do
    tries=$((tries + 1))
    if [ "$tries" -ge "${MIGRATE_TRIES:-30}" ]; then
      echo "entrypoint: migrations failed $tries times; giving up" >&2
      exit 1
    fi
    echo "entrypoint: database not ready, retrying in 2s ($tries)" >&2
    sleep 2
  done
}

migrate
case "$role" in
  api)
    if [ "${ETL_RUN_ON_START:-1}" = "1" ]; then
      # Queued for the workers (or run in-process without a broker); the API serves meanwhile.
      flask --app wsgi etl run --enqueue &
    fi
    # The app logs every request itself, structured and redacted: no second access log.
    # One sync worker per core measured fastest (README, Performance): set WEB_CONCURRENCY so.
    exec gunicorn --bind "0.0.0.0:${PORT:-8000}" --workers "${WEB_CONCURRENCY:-2}" --no-control-socket \
      --timeout "${GUNICORN_TIMEOUT:-120}" --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1,::1}" \
      wsgi:app
    ;;
  worker)
    exec celery -A wsgi.celery_app worker --loglevel "${LOG_LEVEL:-INFO}" \
      --concurrency "${WORKER_CONCURRENCY:-2}" --hostname "worker@%h"
    ;;
  beat)
    exec celery -A wsgi.celery_app beat --loglevel "${LOG_LEVEL:-INFO}" \
      --schedule "${BEAT_SCHEDULE_FILE:-/tmp/celerybeat-schedule}"
    ;;
  flower)
    : "${FLOWER_BASIC_AUTH:?set FLOWER_BASIC_AUTH=user:password; Flower never runs without auth}"
    exec celery -A wsgi.celery_app flower --port="${FLOWER_PORT:-5555}"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
