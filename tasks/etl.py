"""The per-source chain ``etl.ingest`` → ``etl.finish_run``, and scheduled starts.

The names of the previous release, ``etl.extract`` and ``etl.transform_and_upsert``, stay
registered for one release as aliases of the same tasks, so that a chain queued before an
upgrade still finishes its run (docs/operations/orchestration.md, "Upgrading").

Every line a task logs, its own, the pipeline's, a library's and Celery's account of how it
ended, carries ``task_id`` and, for a run's task, ``run_id`` and ``source``: they are bound when
the task starts (``FlaskTask.__call__``, kasparro.celery_app) and unbound when it ends, so
nothing of one task reaches the next.
"""

from contextlib import contextmanager
from typing import Any

import redis
import sqlalchemy as sa
import structlog
from billiard.exceptions import WorkerLostError
from celery import current_task, shared_task
from celery.exceptions import Ignore
from celery.signals import task_failure
from flask import current_app

from kasparro.dispatch import (
    FINISH_TASK,
    INGEST_TASK,
    LEGACY_FINISH_TASK,
    LEGACY_INGEST_TASK,
    dispatch_run,
)
from kasparro.etl import pipeline
from kasparro.etl.runs import SourceBusy, fail_run
from kasparro.etl.sources.base import ReadReport
from kasparro.extensions import db
from kasparro.models import EtlRun, RunStatus

log = structlog.get_logger(__name__)
# Deliveries of each task, counted in the broker's Redis: they outlive any worker.
DELIVERIES_KEY = "kasparro:deliveries:{task_id}"
DELIVERIES_KEPT_SECONDS = 7 * 24 * 3600  # far longer than a message takes to come back


class WorkerLost(RuntimeError):
    """The worker (or its process) running a run's task died each time the task was sent."""


@contextmanager
def _failing_run_on_error(run_id: int):
    # Every failure is recorded on the run before the task itself fails.
    try:
        yield
    except Exception as exc:
        fail_run(db.session, run_id, exc)
        raise


def count_delivery(task) -> int | None:
    """Count one more delivery of the running task in the broker's Redis; return the count.

    A task whose worker process dies is retried by the worker, which counts those retries; a
    task whose whole worker dies (killed, out of memory, its node lost) comes back from Redis
    after the visibility timeout, and only this count sees it. None: no Redis broker to keep it.
    """
    broker = task.app.conf.broker_url or ""
    if task.request.is_eager or not broker.startswith(("redis://", "rediss://")):
        return None
    key = DELIVERIES_KEY.format(task_id=task.request.id)
    try:
        with redis.Redis.from_url(broker, socket_timeout=5, socket_connect_timeout=5) as client:
            count, _ = client.pipeline().incr(key).expire(key, DELIVERIES_KEPT_SECONDS).execute()
    except redis.RedisError as exc:  # the message came from this Redis: a blip, not a loop
        log.warning("etl.task.deliveries_uncounted", error=type(exc).__name__)
        return None
    return count


def _ensure_running(run_id: int) -> None:
    run = db.session.get(EtlRun, run_id)
    request = current_task.request
    if run is not None:
        current_task.bind_log_context(source=run.source)
    deliveries = count_delivery(current_task)
    log.info(
        "etl.task.started", task=current_task.name, attempt=request.retries + 1, delivery=deliveries
    )
    # A task delivered again after its run finished (or was closed as abandoned) does nothing.
    if run is None or run.status != RunStatus.RUNNING:
        log.warning("etl.task.stale_delivery", status=getattr(run, "status", None))
        raise Ignore()
    # Every earlier delivery of a task whose run is still RUNNING ended with its worker lost.
    bound = current_app.config["ETL_WORKER_LOST_RETRIES"] + 1
    if deliveries is not None and deliveries > bound:
        losses = deliveries - 1
        lost = WorkerLost(
            f"the worker running {current_task.name} was lost {losses} "
            f"time{'s' * (losses > 1)} before the task ended "
            "(each time the broker delivered it again); not retried again"
        )
        fail_run(db.session, run_id, lost)
        log.error("etl.task.worker_lost", task=current_task.name, error=str(lost))
        raise Ignore()  # acknowledged: the message does not come back


@shared_task(name=INGEST_TASK, run_id_of=staticmethod(lambda args: args[0]))
def ingest(run_id: int) -> dict[str, Any]:
    """Read, store and load a run's source batch by batch; return the run id and read report.

    Transient upstream failures are retried inside the read, with backoff, jitter and a budget
    (kasparro.etl.http_client); what still fails here fails the run.
    """
    _ensure_running(run_id)
    with _failing_run_on_error(run_id):
        report = pipeline.ingest(db.session, run_id, current_app.config)
    return {"run_id": run_id, "report": report.to_json()}


@shared_task(name=FINISH_TASK, run_id_of=staticmethod(lambda args: args[0]["run_id"]))
def finish_run(ingested: dict[str, Any]) -> dict[str, Any]:
    """Close the run with its status: PARTIAL when it rejected records or stopped early."""
    run_id = ingested["run_id"]
    _ensure_running(run_id)
    with _failing_run_on_error(run_id):
        report = ReadReport.from_json(ingested["report"])
        status = pipeline.finish_run(db.session, run_id, report, current_app.config)
    return {"run_id": run_id, "status": status}


# The previous release's names, for chains it queued (to be removed in the next release).
@shared_task(name=LEGACY_INGEST_TASK, run_id_of=staticmethod(lambda args: args[0]))
def extract(run_id: int) -> dict[str, Any]:
    """``etl.ingest`` under its former name."""
    return ingest.run(run_id)


@shared_task(name=LEGACY_FINISH_TASK, run_id_of=staticmethod(lambda args: args[0]["run_id"]))
def transform_and_upsert(extracted: dict[str, Any]) -> dict[str, Any]:
    """``etl.finish_run`` under its former name."""
    return finish_run.run(extracted)


@shared_task(name="etl.scheduled_run")
def scheduled_run(source: str) -> dict[str, Any]:
    """Start a run of ``source`` for beat; a source still running is recorded as SKIPPED."""
    try:
        run_id, task_id = dispatch_run(source, "schedule")
    except SourceBusy as busy:
        return {"skipped_run_id": busy.skipped_run_id, "running_run_id": busy.running_run_id}
    return {"run_id": run_id, "task_id": task_id}


@task_failure.connect
def record_lost_worker(sender=None, task_id=None, exception=None, args=None, **kwargs) -> None:
    """Fail the run whose task killed its worker process on every delivery, naming the cause.

    The worker's main process sends this once the task's retries after a lost worker are spent
    (``task_retry_on_worker_lost``); without it the run would stay RUNNING until it went stale.
    """
    if not isinstance(exception, WorkerLostError) or sender.run_id_of is None:
        return
    run_id = sender.run_id_of(args)
    cause = str(exception).split(" Job:")[0]
    deaths = sender.request.retries + 1
    lost = WorkerLost(
        f"the worker process running {sender.name} died {deaths} time{'s' * (deaths > 1)} "
        f"({cause}); not retried again"
    )
    with sender.app_context():
        # This runs in the worker's main process, outside the task: its lines are bound here.
        source = db.session.scalar(sa.select(EtlRun.source).where(EtlRun.id == run_id))
        with structlog.contextvars.bound_contextvars(task_id=task_id, run_id=run_id, source=source):
            fail_run(db.session, run_id, lost)
            log.error("etl.task.worker_lost", task=sender.name, error=str(lost))
        db.session.remove()
        # Processes the main process forks later must not inherit its database connection.
        db.engine.dispose()
