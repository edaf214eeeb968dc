"""Bind a Celery app to the Flask app, following Flask's documented pattern."""

from celery import Celery, Task
from flask import Flask


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app from ``celeryconfig``, run every task in the app context."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object("celeryconfig")
    celery_app.conf.update(app.config.get("CELERY", {}))
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def broker_reachable(celery_app: Celery) -> bool | None:
    """Return whether the broker answers a ping within a second; None when there is no broker."""
    if celery_app.conf.task_always_eager:
        return None
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0, timeout=1)
    except Exception:  # any failure to connect means "not connected", whatever the transport
        return False
    return True
