"""Start runs from the web app and the CLI: record the run, then queue its tasks by name.

The tasks themselves live in the ``tasks`` package, which imports this one; queuing them by
name keeps the arrows one way. Without a broker the chain runs eagerly, in this process, with
the tasks the Celery app loaded through its configuration's ``imports`` (kasparro.celery_config).
"""

import sqlalchemy as sa
import structlog
from celery import Celery, chain
from celery.utils import uuid
from flask import current_app
from kombu.exceptions import OperationalError

from kasparro.celery_app import broker_reachable
from kasparro.etl.runs import fail_run, start_run
from kasparro.extensions import db
from kasparro.models import EtlRun, RunStatus

INGEST_TASK = "etl.ingest"
FINISH_TASK = "etl.finish_run"
# The same tasks under the previous release's names, kept for one release (tasks.etl).
LEGACY_INGEST_TASK = "etl.extract"
LEGACY_FINISH_TASK = "etl.transform_and_upsert"


class BrokerUnavailable(RuntimeError):
    """The task queue could not be reached, so a run could not be queued."""


def dispatch_run(source: str, trigger: str) -> tuple[int, str]:
    """Record a RUNNING run and queue its chain; return (run id, task id).

    Raises SourceBusy when the source is already running, and BrokerUnavailable when the queue
    cannot be reached; then the run is closed as FAILED, so it holds no lock.
    """
    celery_app: Celery = current_app.extensions["celery"]
    task_id = uuid()
    run_id = start_run(db.session, source, trigger, current_app.config, task_id)
    work = chain(
        celery_app.signature(INGEST_TASK, args=(run_id,), immutable=True).set(task_id=task_id),
        celery_app.signature(FINISH_TASK),
    )
    try:
        if broker_reachable(celery_app) is False:
            raise OperationalError("no answer from the broker")
        # Celery's lines while the chain is queued belong to the run.
        with structlog.contextvars.bound_contextvars(run_id=run_id, source=source, task_id=task_id):
            work.apply_async()
    except OperationalError as exc:
        unavailable = BrokerUnavailable("the task queue is unreachable; no run was started")
        fail_run(db.session, run_id, unavailable)
        raise unavailable from exc
    except Exception as exc:
        db.session.expire_all()
        status = db.session.scalar(sa.select(EtlRun.status).where(EtlRun.id == run_id))
        if status == RunStatus.RUNNING:  # the chain never ran
            fail_run(db.session, run_id, exc)
            raise
        # Run eagerly (no broker), the chain's own failure is already recorded on the run.
    return run_id, task_id
