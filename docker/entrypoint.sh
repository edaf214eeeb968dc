#!/bin/sh
# Start one role of Kasparro: apply migrations (the roles that use the database), then run it.
#   api     gunicorn on 0.0.0.0:$PORT, after queueing an initial ETL pass in the background;
#           Prometheus metrics at /metrics (METRICS_TOKEN, METRICS_ALLOWED_NETWORKS restrict them)
#   worker  a Celery worker, node worker@<host name> (what the compose health check pings);
#           Prometheus metrics on 0.0.0.0:$WORKER_METRICS_PORT
#   beat    the Celery beat scheduler (run exactly one); it only sends tasks: no database
#   flower  Celery's monitor, behind basic auth (FLOWER_BASIC_AUTH=user:password); no database
#   any other command is run as given, after migrations (e.g. flask --app wsgi etl status)
set -eu

# Compose passes each setting .env leaves out as a blank variable. Blank means the default, for
# the app as for this script, but not for every tool: gunicorn reads WEB_CONCURRENCY as a number
# when it is set at all. So blank variables are unset first.
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=$/\1/p'); do
  unset "$name"
done

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

# The role's processes (gunicorn's workers, Celery's pool) share their metrics in files, in a
# directory of the role's own, emptied first: a restarted role counts from zero, as Prometheus
# expects of a restarted target. Two roles on one host never share one.
share_metrics() {
  PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/kasparro-metrics}/$role"
  rm -rf "$PROMETHEUS_MULTIPROC_DIR"
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  export PROMETHEUS_MULTIPROC_DIR
}

# Beat and Flower talk to the broker only: compose gives them no database URL.
case "$role" in
  beat | flower) ;;
  *) migrate ;;
esac
case "$role" in
  api)
    share_metrics
    if [ "${ETL_RUN_ON_START:-1}" = "1" ]; then
      # Queued for the workers (or run in-process without a broker); the API serves meanwhile.
      flask --app wsgi etl run --enqueue &
    fi
    # The app logs every request itself, structured and redacted: no second access log.
    # One sync worker per core measured fastest (docs/performance.md): set WEB_CONCURRENCY so.
    # docker/gunicorn.conf.py holds the hooks: a worker that exits is told to the metrics.
    exec gunicorn --bind "0.0.0.0:${PORT:-8000}" --workers "${WEB_CONCURRENCY:-2}" --no-control-socket \
      --timeout "${GUNICORN_TIMEOUT:-120}" --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1,::1}" \
      --config docker/gunicorn.conf.py wsgi:app
    ;;
  worker)
    share_metrics
    exec celery -A wsgi.celery_app worker --loglevel "${LOG_LEVEL:-INFO}" \
      --concurrency "${WORKER_CONCURRENCY:-2}" --hostname "worker@%h" \
      --metrics-port "${WORKER_METRICS_PORT:-9808}"
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
