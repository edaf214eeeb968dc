"""Celery settings, built from the app's settings (``kasparro.config``).

Without ``CELERY_BROKER_URL`` (the embedded default) tasks run eagerly in the calling process,
so the same code path works on a machine with only Python.
"""

from kasparro.config import load_settings
from kasparro.etl.sources import SOURCES
from kasparro.setting import schedule_setting

_settings = load_settings()

broker_url = _settings["CELERY_BROKER_URL"] or "memory://"
result_backend = _settings["CELERY_RESULT_BACKEND"] or None
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
task_soft_time_limit = _settings["CELERY_TASK_SOFT_TIME_LIMIT"]
task_time_limit = task_soft_time_limit + 60
# Redis redelivers an unacknowledged task after this long: it must exceed the longest run.
# Workers look for such tasks every CELERY_UNACKED_RESTORE_SECONDS.
# The scan holds a Redis mutex; a worker killed while holding it blocks scans until it expires.
_restore_seconds = _settings["CELERY_UNACKED_RESTORE_SECONDS"]
_visibility_timeout = _settings["CELERY_VISIBILITY_TIMEOUT"]
if _visibility_timeout is None:  # unset: ten minutes longer than any task may run
    _visibility_timeout = task_time_limit + 600
broker_transport_options = {
    "visibility_timeout": _visibility_timeout,
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
task_default_queue = _settings["CELERY_QUEUE"]
imports = ("tasks.etl", "tasks.maintenance")
# Kasparro's own structured, redacting logging stays in charge in worker processes too.
worker_hijack_root_logger = False
worker_redirect_stdouts = False

beat_schedule = {
    f"etl-{source}": {
        "task": "etl.scheduled_run",
        "schedule": float(_settings[schedule_setting(source)]),
        "args": (source,),
    }
    for source in SOURCES
}
# Retention deletes old raw rows in short batches (kasparro.etl.retention), never blocking a run.
beat_schedule["retention"] = {
    "task": "etl.retention",
    "schedule": float(_settings["SCHEDULE_RETENTION_SECONDS"]),
}
# Only the values above are Celery's; the app's settings (secrets among them) stay out of the
# configuration Celery keeps and can be asked to show.
del _settings
