"""Bind a Celery app to the Flask app, following Flask's documented pattern."""

import time
import weakref

from celery import Celery, Task
from flask import Flask

BROKER_ANSWER_SECONDS = 1.0
# When each Celery app's broker last answered a ping (time.monotonic(), taken before the ping).
_answered_at: weakref.WeakKeyDictionary[Celery, float] = weakref.WeakKeyDictionary()


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app from ``celeryconfig``, run every task in the app context."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with self.app_context():
                return self.run(*args, **kwargs)

        def app_context(self):
            """Return the Flask app context tasks run in (also for the worker's own handlers)."""
            return app.app_context()

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object("celeryconfig")
    # A task whose worker process died is sent again a bounded number of times, then fails.
    celery_app.conf.task_annotations = {
        "*": {
            "max_retries": app.config["ETL_WORKER_LOST_RETRIES"],
            "default_retry_delay": app.config["ETL_WORKER_LOST_RETRY_DELAY_SECONDS"],
        }
    }
    celery_app.conf.update(app.config.get("CELERY", {}))
    if celery_app.conf.task_always_eager:
        # Tasks run in this process: load them through celeryconfig's ``imports``, as a worker
        # does, so that they are found by name (kasparro.dispatch) without importing tasks/.
        celery_app.loader.import_default_modules()
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def broker_reachable(celery_app: Celery) -> bool | None:
    """Return whether the broker answers a ping within a second; None when there is no broker.

    An answer is trusted for BROKER_ANSWER_SECONDS: a ping opens a connection, and /health may
    be asked for many times a second. So a broker that stops answering is reported reachable
    for at most that long after its last answer; one that answers again is seen at once, as
    "unreachable" is never reused.
    """
    if celery_app.conf.task_always_eager:
        return None
    now = time.monotonic()
    answered = _answered_at.get(celery_app)
    if answered is not None and now - answered < BROKER_ANSWER_SECONDS:
        return True
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0, timeout=1)
    except Exception:  # any failure to connect means "not connected", whatever the transport
        return False
    _answered_at[celery_app] = now
    return True
