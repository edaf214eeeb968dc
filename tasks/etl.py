"""The per-source chain ``etl.extract`` → ``etl.transform_and_upsert``, and scheduled starts."""

from contextlib import contextmanager
from typing import Any

import structlog
from billiard.exceptions import WorkerLostError
from celery import current_task, shared_task
from celery.exceptions import Ignore
from celery.signals import task_failure
from flask import current_app

from kasparro.dispatch import EXTRACT_TASK, TRANSFORM_TASK, dispatch_run
from kasparro.etl import pipeline
from kasparro.etl.runs import SourceBusy, fail_run
from kasparro.etl.sources.base import ReadReport
from kasparro.extensions import db
from kasparro.models import EtlRun, RunStatus

log = structlog.get_logger(__name__)


class WorkerLost(RuntimeError):
    """The worker process running a run's task died each time the task was sent."""


@contextmanager
def _failing_run_on_error(run_id: int):
    # Every failure is recorded on the run before the task itself fails.
    try:
        yield
    except Exception as exc:
        fail_run(db.session, run_id, exc)
        raise


def _ensure_running(run_id: int) -> None:
    log.info(
        "etl.task.started",
        task=current_task.name,
        run_id=run_id,
        attempt=current_task.request.retries + 1,
    )
    # A task delivered again after its run finished (or was closed as abandoned) does nothing.
    run = db.session.get(EtlRun, run_id)
    if run is None or run.status != RunStatus.RUNNING:
        log.warning("etl.task.stale_delivery", run_id=run_id, status=getattr(run, "status", None))
        raise Ignore()


@shared_task(name=EXTRACT_TASK)
def extract(*args: Any) -> dict[str, Any]:
    """Extract a run's source into its raw table; return the run id and the read report.

    The run id is the last argument: a message queued by an earlier version, still waiting in
    the broker when it was upgraded, also names the source first.

    Transient upstream failures are retried inside the extraction, with backoff, jitter and a
    budget (kasparro.etl.http_client); what still fails here fails the run.
    """
    run_id = args[-1]
    _ensure_running(run_id)
    with _failing_run_on_error(run_id):
        report = pipeline.extract(db.session, run_id, current_app.config)
    return {"run_id": run_id, "report": report.to_json()}


@shared_task(name=TRANSFORM_TASK)
def transform_and_upsert(extracted: dict[str, Any]) -> dict[str, Any]:
    """Transform the run's raw rows into unified rows and finish the run."""
    run_id = extracted["run_id"]
    _ensure_running(run_id)
    with _failing_run_on_error(run_id):
        # An earlier version called the report "context"; its fields were the same.
        report = ReadReport.from_json(extracted.get("report") or extracted.get("context") or {})
        status = pipeline.transform_and_upsert(db.session, run_id, report, current_app.config)
    return {"run_id": run_id, "status": status}


@shared_task(name="etl.scheduled_run")
def scheduled_run(source: str) -> dict[str, Any]:
    """Start a run of ``source`` for beat; a source still running is recorded as SKIPPED."""
    try:
        run_id, task_id = dispatch_run(source, "schedule")
    except SourceBusy as busy:
        return {"skipped_run_id": busy.skipped_run_id, "running_run_id": busy.running_run_id}
    return {"run_id": run_id, "task_id": task_id}


@task_failure.connect
def record_lost_worker(sender=None, exception=None, args=None, **kwargs) -> None:
    """Fail the run whose task killed its worker process on every delivery, naming the cause.

    The worker's main process sends this once the task's retries after a lost worker are spent
    (``task_retry_on_worker_lost``); without it the run would stay RUNNING until it went stale.
    """
    if not isinstance(exception, WorkerLostError) or sender.name not in _RUN_ID_OF:
        return
    run_id = _RUN_ID_OF[sender.name](args)
    cause = str(exception).split(" Job:")[0]
    deaths = sender.request.retries + 1
    lost = WorkerLost(
        f"the worker process running {sender.name} died {deaths} time{'s' * (deaths > 1)} "
        f"({cause}); not retried again"
    )
    with sender.app_context():
        fail_run(db.session, run_id, lost)
        db.session.remove()
        # This runs in the worker's main process: processes it forks later must not inherit
        # its database connection.
        db.engine.dispose()
    log.error("etl.task.worker_lost", task=sender.name, run_id=run_id, error=str(lost))


_RUN_ID_OF = {
    extract.name: lambda args: args[-1],
    transform_and_upsert.name: lambda args: args[0]["run_id"],
}
