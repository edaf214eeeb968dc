"""Bind a Celery app to the Flask app, following Flask's documented pattern."""

import time
import weakref

import click
import structlog
from celery import Celery, Task, bootsteps
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.signals import setup_logging, task_postrun, worker_process_shutdown
from flask import Flask

from kasparro.celery_config import celery_settings
from kasparro.metrics import (
    NOT_SHARED_MESSAGE,
    forget_process,
    serve_worker_metrics,
    split_between_processes,
)

log = structlog.get_logger(__name__)
BROKER_ANSWER_SECONDS = 1.0
# When each Celery app's broker last answered a ping (time.monotonic(), taken before the ping).
_answered_at: weakref.WeakKeyDictionary[Celery, float] = weakref.WeakKeyDictionary()


def _task_class(app: Flask) -> type[Task]:
    """Return the task class of ``app``'s Celery app: every task runs in ``app``'s context."""

    class FlaskTask(Task):
        run_id_of = None
        """A run's task: how to find the run id in its arguments (a static method)."""

        def __call__(self, *args, **kwargs):
            """Run the task in the app context, every line it logs bound to it (and its run).

            Celery writes its own line on how the task ended after this returns, so the context
            is restored after that line, by ``restore_task_log_context``.
            """
            context = {"task_id": self.request.id}
            if self.run_id_of is not None:
                context["run_id"] = self.run_id_of(args)
            self.request.log_tokens = {}
            self.bind_log_context(**context)
            with self.app_context():
                return self.run(*args, **kwargs)

        def bind_log_context(self, **values) -> None:
            """Bind ``values`` to every line logged until the running task has ended."""
            self.request.log_tokens.update(structlog.contextvars.bind_contextvars(**values))

        def app_context(self):
            """Return the Flask app context tasks run in (also for the worker's own handlers)."""
            return app.app_context()

    return FlaskTask


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app, configured from the app's settings; every task runs in the app
    context."""
    celery_app = Celery(app.name, task_cls=_task_class(app))
    celery_app.config_from_object(celery_settings(app.config) | app.config.get("CELERY", {}))
    _add_metrics_server(celery_app)
    if celery_app.conf.task_always_eager:
        # Tasks run in this process: load them through the configuration's ``imports``, as a worker
        # does, so that they are found by name (kasparro.dispatch) without importing tasks/.
        celery_app.loader.import_default_modules()
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def _add_metrics_server(celery_app: Celery) -> None:
    """Give the worker a ``--metrics-port`` option, and the step that serves it."""
    celery_app.user_options["worker"].add(
        click.Option(
            ["--metrics-port"],
            type=int,
            default=None,
            help="Serve the worker's Prometheus metrics on this port (default: not served).",
        )
    )
    celery_app.steps["worker"].add(MetricsServer)


class MetricsServer(bootsteps.StartStopStep):
    """Serve the worker's metrics over HTTP from its main process, given ``--metrics-port``.

    Tasks run in the pool's processes; with PROMETHEUS_MULTIPROC_DIR set (the entrypoint sets it)
    each keeps its values in files there, and this server merges them on every scrape.
    """

    def __init__(self, parent, metrics_port: int | None = None, **options):
        super().__init__(parent, **options)
        self.port = metrics_port
        self.enabled = metrics_port is not None
        self.server = None

    def start(self, parent) -> None:
        """Listen on every interface: Prometheus scrapes the worker from another container."""
        pool_processes = issubclass(parent.pool_cls, PreforkPool)  # tasks run in child processes
        if split_between_processes(pool_processes):
            log.warning("metrics.not_shared", port=self.port, message=NOT_SHARED_MESSAGE)
        self.server = serve_worker_metrics(self.port, pool_processes)

    def stop(self, parent) -> None:
        """Stop listening."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@setup_logging.connect
def keep_app_logging(**kwargs) -> None:
    """Leave logging as create_app set it (LOG_LEVEL, LOG_FORMAT): Celery would reset the level."""


@task_postrun.connect
def restore_task_log_context(task=None, **kwargs) -> None:
    """Restore the log context the task started in (an eager task's caller's, say).

    Sent after Celery's line on how the task ended, which carries the task's context too.
    """
    structlog.contextvars.reset_contextvars(**getattr(task.request, "log_tokens", {}))


@worker_process_shutdown.connect
def forget_pool_process(pid: int, **kwargs) -> None:
    """Drop the live gauges of a pool process that exits; what it counted stays counted."""
    forget_process(pid)


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
