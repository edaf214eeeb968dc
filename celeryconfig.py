"""Celery settings, read from the environment.

Without ``CELERY_BROKER_URL`` (the embedded default) tasks run eagerly in the calling process,
so the same code path works on a machine with only Python.
"""

import os

from kasparro.config import env_int
from kasparro.etl.sources import SOURCE_NAMES

DEFAULT_SCHEDULE_SECONDS = {"coingecko_api": 300}  # other sources: 600
DEFAULT_RETENTION_SECONDS = 3600


def schedule_setting(source: str) -> str:
    """Return the environment variable that sets ``source``'s beat interval."""
    return f"SCHEDULE_{source.upper()}_SECONDS"


broker_url = os.environ.get("CELERY_BROKER_URL", "").strip() or "memory://"
result_backend = os.environ.get("CELERY_RESULT_BACKEND", "").strip() or None
task_always_eager = broker_url == "memory://"
task_eager_propagates = False

# A task is acknowledged only when it has finished, and a task whose worker died is delivered
# again; the pipeline's checkpoints make the second delivery resume rather than duplicate.
task_acks_late = True
task_reject_on_worker_lost = True
# ... but not for ever: an input that kills its worker (out of memory, say) is sent again only
# ETL_WORKER_LOST_RETRIES times (task_annotations, set from the app's settings), then its run
# is FAILED with the cause (tasks.etl.record_lost_worker).
task_retry_on_worker_lost = True
worker_prefetch_multiplier = 1
task_soft_time_limit = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 1800)
task_time_limit = task_soft_time_limit + 60
# Redis redelivers an unacknowledged task after this long: it must exceed the longest run.
# Workers look for such tasks every CELERY_UNACKED_RESTORE_SECONDS.
# The scan holds a Redis mutex; a worker killed while holding it blocks scans until it expires.
_restore_seconds = env_int("CELERY_UNACKED_RESTORE_SECONDS", 60)
broker_transport_options = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", task_time_limit + 600),
    "unacked_restore_interval": _restore_seconds,
    "unacked_restore_throttle": 1,
    "unacked_mutex_expire": max(10, 5 * _restore_seconds),
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
}
redis_socket_connect_timeout = 5
# The result backend gives up quickly too (its default is twenty tries a second apart).
result_backend_transport_options = {"retry_policy": {"max_retries": 2, "interval_step": 0.5}}
# Publishing gives up within about two seconds when the broker is down, so callers can say so.
task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}
broker_connection_retry_on_startup = True

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_expires = 86400
timezone = "UTC"
enable_utc = True
task_default_queue = os.environ.get("CELERY_QUEUE", "").strip() or "etl"
imports = ("tasks.etl", "tasks.maintenance")
# Kasparro's own structured, redacting logging stays in charge in worker processes too.
worker_hijack_root_logger = False
worker_redirect_stdouts = False

beat_schedule = {
    f"etl-{source}": {
        "task": "etl.scheduled_run",
        "schedule": float(
            env_int(schedule_setting(source), DEFAULT_SCHEDULE_SECONDS.get(source, 600))
        ),
        "args": (source,),
    }
    for source in SOURCE_NAMES
}
# Retention deletes old raw rows in short batches (kasparro.etl.retention), never blocking a run.
beat_schedule["retention"] = {
    "task": "etl.retention",
    "schedule": float(env_int("SCHEDULE_RETENTION_SECONDS", DEFAULT_RETENTION_SECONDS)),
}
