"""Celery's configuration, built from the app's settings (``kasparro.config``).

As in Flask's Celery pattern, ``celery_init_app`` passes it to ``config_from_object``: the
environment is read once, by ``create_app``, for the app and for Celery alike. Only the values
here are Celery's; the app's settings (secrets among them) stay out of the configuration Celery
keeps and can be asked to show.

Without ``CELERY_BROKER_URL`` (the embedded default) tasks run eagerly in the calling process,
so the same code path works on a machine with only Python.
"""

from collections.abc import Mapping
from typing import Any

from kasparro.etl.sources import SOURCES
from kasparro.setting import schedule_setting

Settings = Mapping[str, Any]


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Return Celery's configuration for an app configured with ``settings``."""
    broker_url = settings["CELERY_BROKER_URL"] or "memory://"
    return {
        "broker_url": broker_url,
        "result_backend": settings["CELERY_RESULT_BACKEND"] or None,
        "task_always_eager": broker_url == "memory://",
        "task_eager_propagates": False,
        **_delivery(settings),
        **_broker_timeouts(settings),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 86400,
        "timezone": "UTC",
        "enable_utc": True,
        "task_default_queue": settings["CELERY_QUEUE"],
        "imports": ("tasks.etl", "tasks.maintenance"),
        # Kasparro's own structured, redacting logging stays in charge in worker processes too.
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "beat_schedule": _beat_schedule(settings),
    }


def _delivery(settings: Settings) -> dict[str, Any]:
    """A task is acknowledged only when it has finished, and a task whose worker died is
    delivered again; the pipeline's checkpoints make the second delivery resume rather than
    duplicate. But not for ever: an input that kills its worker (out of memory, say) is sent
    again only ETL_WORKER_LOST_RETRIES times, then its run is FAILED with the cause
    (tasks.etl.record_lost_worker)."""
    soft_limit = settings["CELERY_TASK_SOFT_TIME_LIMIT"]
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_retry_on_worker_lost": True,
        "task_annotations": {
            "*": {
                "max_retries": settings["ETL_WORKER_LOST_RETRIES"],
                "default_retry_delay": settings["ETL_WORKER_LOST_RETRY_DELAY_SECONDS"],
            }
        },
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": soft_limit,
        "task_time_limit": soft_limit + 60,
    }


def _broker_timeouts(settings: Settings) -> dict[str, Any]:
    """Redis redelivers an unacknowledged task after the visibility timeout: it must exceed the
    longest run. Workers look for such tasks every CELERY_UNACKED_RESTORE_SECONDS; the scan holds
    a Redis mutex, and a worker killed while holding it blocks scans until it expires."""
    restore_seconds = settings["CELERY_UNACKED_RESTORE_SECONDS"]
    visibility_timeout = settings["CELERY_VISIBILITY_TIMEOUT"]
    if visibility_timeout is None:  # unset: ten minutes longer than any task may run
        visibility_timeout = settings["CELERY_TASK_SOFT_TIME_LIMIT"] + 60 + 600
    return {
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout,
            "unacked_restore_interval": restore_seconds,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": max(10, 5 * restore_seconds),
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
        },
        "redis_socket_connect_timeout": 5,
        # The result backend gives up quickly too (its default is twenty tries a second apart).
        "result_backend_transport_options": {
            "retry_policy": {"max_retries": 2, "interval_step": 0.5}
        },
        # Publishing gives up within about two seconds when the broker is down, so callers can
        # say so.
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
        "broker_connection_retry_on_startup": True,
    }


def _beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each source on its own interval; retention deletes old raw rows in short batches
    (kasparro.etl.retention), never blocking a run."""
    schedule: dict[str, dict[str, Any]] = {
        f"etl-{source}": {
            "task": "etl.scheduled_run",
            "schedule": float(settings[schedule_setting(source)]),
            "args": (source,),
        }
        for source in SOURCES
    }
    schedule["retention"] = {
        "task": "etl.retention",
        "schedule": float(settings["SCHEDULE_RETENTION_SECONDS"]),
    }
    return schedule
