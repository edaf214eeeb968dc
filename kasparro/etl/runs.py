"""The run log and the per-source lock it carries: start, heartbeat, skip, abandon, finish, fail.

A run is a row of ``etl_runs``. A RUNNING row is the source's lock: a partial unique index
allows one per source, every batch moves its heartbeat, and a run silent for longer than
``ETL_STALE_AFTER_SECONDS`` is closed as abandoned by the next start. Closing is a conditional
update, so whoever closes a run second changes nothing.
"""

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from kasparro.db_types import utcnow
from kasparro.etl.sources import source_class
from kasparro.etl.versions import record_change
from kasparro.metrics import record_run
from kasparro.models import Checkpoint, EtlRun, RunStatus

log = structlog.get_logger(__name__)
ERROR_TEXT_LIMIT = 2000


class SourceBusy(RuntimeError):
    """The source already has a RUNNING run; this attempt was recorded as SKIPPED."""

    def __init__(self, source: str, running_run_id: int, skipped_run_id: int):
        super().__init__(f"{source} is already running as run {running_run_id}")
        self.source = source
        self.running_run_id = running_run_id
        self.skipped_run_id = skipped_run_id


class RunAbandoned(RuntimeError):
    """A later run closed this one as abandoned; its work in flight must not be committed."""


def start_run(
    session: Session,
    source: str,
    trigger: str,
    settings: dict[str, Any],
    task_id: str | None = None,
) -> int:
    """Record a RUNNING run of ``source`` and return its id; raise SourceBusy if one is running.

    A unique index allows one RUNNING run per source, so two simultaneous starts cannot both
    win. A RUNNING run whose heartbeat is older than ``ETL_STALE_AFTER_SECONDS`` belongs to a
    process that died; it is closed as FAILED so that its lock does not outlive it.
    """
    source_class(source)  # an unknown source fails here, before a run is recorded
    _close_abandoned_run(session, source, settings["ETL_STALE_AFTER_SECONDS"])
    run = _new_run(source, RunStatus.RUNNING, trigger, task_id)
    run.heartbeat_at = run.started_at
    run.checkpoint_before = _cursor(session, source)
    session.add(run)
    try:
        session.flush()  # the unique index refuses a second RUNNING run of the source here
    except IntegrityError:
        session.rollback()
        raise _record_skipped(session, source, trigger, task_id) from None
    record_change(session, source)
    session.commit()
    log.info("etl.run.started", run_id=run.id, source=source, trigger=trigger, task_id=task_id)
    return run.id


def heartbeat_or_abandon(session: Session, run: EtlRun) -> None:
    """Move the run's heartbeat in the batch's transaction; raise RunAbandoned if it was closed.

    The conditional update takes the run's row lock, so it serialises with a later run that
    closes this one as abandoned: either this batch commits first, or it is rolled back.
    """
    beat = utcnow()
    held = session.execute(
        sa.update(EtlRun)
        .where(EtlRun.id == run.id, EtlRun.status == RunStatus.RUNNING)
        .values(heartbeat_at=beat)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not held:
        raise RunAbandoned(f"run {run.id} was closed by a later run; this batch is discarded")
    run.heartbeat_at = beat
    record_change(session, run.source)  # the batch's rows commit with it


def finish_run(
    session: Session,
    run: EtlRun,
    status: RunStatus,
    cursor: dict | None,
    error: str = "",
    *still: sa.ColumnElement[bool],
) -> RunStatus:
    """Close a RUNNING run and return its final status; a run already closed keeps its own.

    ``still`` adds conditions the run must meet to be closed. The update is conditional, so
    whoever closes a run second changes nothing: a run that finished while it was being closed
    as abandoned keeps its real status.
    """
    finished_at = utcnow()
    closed = session.execute(
        sa.update(EtlRun)
        .where(EtlRun.id == run.id, EtlRun.status == RunStatus.RUNNING, *still)
        .values(
            status=status,
            error=error or None,
            finished_at=finished_at,
            duration_ms=int((finished_at - run.started_at).total_seconds() * 1000),
            checkpoint_after=cursor,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    record_change(session, run.source)
    session.commit()
    if not closed:
        return RunStatus(run.status)
    record_run(run)  # only by whoever closed it: a run is counted once
    log.info(
        "etl.run.finished",
        run_id=run.id,
        source=run.source,
        status=status,
        rows_read=run.rows_read,
        inserted=run.inserted,
        updated=run.updated,
        unchanged=run.unchanged,
        rejected=run.rejected,
        unresolved=run.unresolved,
        duration_ms=run.duration_ms,
        error=run.error,
    )
    return status


def fail_run(session: Session, run_id: int, exc: BaseException) -> RunStatus:
    """Roll back the batch in flight and record the run as FAILED with the error."""
    session.rollback()
    run = session.get_one(EtlRun, run_id)
    if run.status != RunStatus.RUNNING:  # already closed (as abandoned, say): keep that account
        return RunStatus(run.status)
    cursor = _cursor(session, run.source)
    return finish_run(session, run, RunStatus.FAILED, cursor, describe_error(exc))


def describe_error(exc: BaseException) -> str:
    """Return a short, secret-free account of why a run failed (no SQL, no traceback)."""
    if isinstance(exc, SQLAlchemyError):
        original = getattr(exc, "orig", None) or exc
        first_line = str(original).strip().splitlines()[0] if str(original).strip() else ""
        text = f"database error: {type(original).__name__}: {first_line}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:ERROR_TEXT_LIMIT]


def _new_run(source: str, status: RunStatus, trigger: str, task_id: str | None) -> EtlRun:
    return EtlRun(
        source=source, status=status, trigger=trigger, task_id=task_id, started_at=utcnow()
    )


def _cursor(session: Session, source: str) -> dict | None:
    checkpoint = session.get(Checkpoint, source)
    return checkpoint.cursor if checkpoint else None


def _running_run(session: Session, source: str) -> EtlRun | None:
    return session.scalar(
        sa.select(EtlRun).where(EtlRun.source == source, EtlRun.status == RunStatus.RUNNING)
    )


def _close_abandoned_run(session: Session, source: str, stale_after_seconds: int) -> None:
    running = _running_run(session, source)
    if running is None:
        return
    cutoff = utcnow() - timedelta(seconds=stale_after_seconds)
    last_sign = running.heartbeat_at or running.started_at
    if last_sign >= cutoff:
        return
    # Only if it is still RUNNING and still silent: a run that finished or moved meanwhile
    # keeps its own account.
    closed = finish_run(
        session,
        running,
        RunStatus.FAILED,
        _cursor(session, source),
        f"abandoned: no progress since {last_sign.isoformat()}",
        sa.func.coalesce(EtlRun.heartbeat_at, EtlRun.started_at) < cutoff,
    )
    if closed == RunStatus.FAILED:
        log.warning("etl.run.abandoned", run_id=running.id, source=source)


def _record_skipped(session: Session, source: str, trigger: str, task_id: str | None) -> SourceBusy:
    running = _running_run(session, source)
    running_id = running.id if running else 0  # 0: it finished between our insert and now
    skipped = _new_run(source, RunStatus.SKIPPED, trigger, task_id)
    skipped.finished_at = skipped.started_at
    skipped.duration_ms = 0
    skipped.error = f"{source} is already running as run {running_id}"
    session.add(skipped)
    record_change(session, source)
    session.commit()
    record_run(skipped)
    log.info("etl.run.skipped", run_id=skipped.id, source=source, running_run_id=running_id)
    return SourceBusy(source, running_id, skipped.id)
