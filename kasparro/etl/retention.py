"""Retention: raw records are deleted once the transform has covered them and they are old.

Each source has a raw retention age in days (``RETENTION_RAW_DAYS_<SOURCE>``; 0 keeps its raw
rows forever). Unified observations are kept unless ``RETENTION_UNIFIED_DAYS`` is set.

Deleting happens in short batches, by primary key, one transaction each:

* A raw batch reads the next ``RETENTION_BATCH_SIZE`` ids of the table in id order, from where
  the previous batch stopped (a keyset walk over the primary key), and deletes, within that id
  range, the rows received before the cutoff. A batch costs the rows it touches, whatever the
  table's size, with no index beyond the primary key: a source writes its rows in time order,
  so the walk starts at the oldest row and stops at the first batch that holds a younger one.
* A raw row the transform has not covered yet (``id > checkpoints.last_raw_id``) is never
  deleted, whatever its age; nor is a table's newest row, because SQLite numbers a new row
  from the highest id left, and reusing ids the checkpoint has covered would hide new rows from
  the transform.
* Observations go oldest ``timestamp`` first, through the ``(timestamp, id)`` index.

A batch commits before the next one starts, and the next waits ``RETENTION_PAUSE_SECONDS``, so
a writer waiting for SQLite's single write lock gets it between two batches. On PostgreSQL a
batch waits at most ``LOCK_TIMEOUT`` for a row lock, less than the server's default deadlock
timeout (1 s): in a conflict retention gives way, never the ETL. A table whose batch finds the
database busy, or that outlasts ``RETENTION_MAX_PASS_SECONDS``, is left for the next pass.

Hand-written rather than taken from a library: none deletes in batches bounded by a pipeline's
own checkpoint on both PostgreSQL and SQLite; each batch here is two plain SQLAlchemy statements.
"""

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from kasparro.db_types import utcnow
from kasparro.etl.sources import SOURCES
from kasparro.etl.versions import record_change
from kasparro.models import Checkpoint, UnifiedRecord
from kasparro.setting import raw_retention_setting

log = structlog.get_logger(__name__)
LOCK_TIMEOUT = "500ms"
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout that fired


@dataclass
class RetentionReport:
    """What a retention pass deleted, and which tables it left for the next pass, and why."""

    raw: dict[str, int] = field(default_factory=dict)
    unified: int = 0
    batches: int = 0
    deferred: dict[str, str] = field(default_factory=dict)
    duration_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the report as plain values, for a task result or a log line."""
        return asdict(self)


def _limit_lock_wait(session: Session) -> None:
    # SET LOCAL lasts until the batch's transaction ends.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))


def last_deletable_raw_id(session: Session, source: str) -> int:
    """Return the highest raw id of ``source`` that may go: covered, and not the newest row."""
    model = SOURCES[source].raw_model
    covered = session.scalar(sa.select(Checkpoint.last_raw_id).where(Checkpoint.source == source))
    newest = session.scalar(sa.select(sa.func.max(model.id)))
    session.commit()  # end the read: a pass holds nothing between its statements
    return min(covered or 0, (newest or 0) - 1)


def raw_batches(
    session: Session, source: str, older_than: datetime, batch_size: int, pause: float = 0.0
) -> Iterator[int]:
    """Delete ``source``'s covered raw rows received before ``older_than``; yield batch counts.

    Each batch is one transaction, committed before it is yielded.
    """
    model = SOURCES[source].raw_model
    last = last_deletable_raw_id(session, source)
    after = 0
    while True:
        if after and pause:
            time.sleep(pause)
        _limit_lock_wait(session)
        rows = session.execute(
            sa.select(model.id, model.received_at)
            .where(model.id > after, model.id <= last)
            .order_by(model.id)
            .limit(batch_size)
        ).all()
        if not rows:
            session.commit()
            return
        deleted = session.execute(
            sa.delete(model)
            .where(
                model.id.between(rows[0].id, rows[-1].id),
                model.id <= last,
                model.received_at < older_than,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        session.commit()
        yield deleted
        if len(rows) < batch_size or any(received >= older_than for _, received in rows):
            return  # the rest of the table is younger, or not covered yet
        after = rows[-1].id


def unified_batches(
    session: Session, older_than: datetime, batch_size: int, pause: float = 0.0
) -> Iterator[int]:
    """Delete observations timestamped before ``older_than``, oldest first; yield each count."""
    first = True
    while True:
        if not first and pause:
            time.sleep(pause)
        first = False
        _limit_lock_wait(session)
        oldest = (
            sa.select(UnifiedRecord.id)
            .where(UnifiedRecord.timestamp < older_than)
            .order_by(UnifiedRecord.timestamp, UnifiedRecord.id)
            .limit(batch_size)
        )
        deleted = session.execute(
            sa.delete(UnifiedRecord)
            .where(UnifiedRecord.id.in_(oldest))
            .execution_options(synchronize_session=False)
        ).rowcount
        if deleted:
            record_change(session, "retention")  # served observations are gone
        session.commit()
        yield deleted
        if deleted < batch_size:
            return


def _is_lock_wait(exc: OperationalError) -> bool:
    original = exc.orig
    if getattr(original, "sqlstate", None) == LOCK_NOT_AVAILABLE:
        return True
    return "database is locked" in str(original)


def _plans(session: Session, settings: dict[str, Any], now: datetime) -> list[tuple]:
    """Return (table, source or None, cutoff, its batches) for each table retention applies to."""
    batch_size = max(1, settings["RETENTION_BATCH_SIZE"])
    pause = max(0.0, settings["RETENTION_PAUSE_SECONDS"])
    plans = []
    for source, source_class in SOURCES.items():
        days = settings.get(raw_retention_setting(source), 0)
        if days > 0:  # 0 (or a negative age) keeps the source's raw rows forever
            cutoff = now - timedelta(days=days)
            table = source_class.raw_model.__tablename__
            plans.append(
                (table, source, cutoff, raw_batches(session, source, cutoff, batch_size, pause))
            )
    if settings["RETENTION_UNIFIED_DAYS"] > 0:
        cutoff = now - timedelta(days=settings["RETENTION_UNIFIED_DAYS"])
        plans.append(
            ("unified_records", None, cutoff, unified_batches(session, cutoff, batch_size, pause))
        )
    return plans


def apply_retention(
    session: Session, settings: dict[str, Any], now: datetime | None = None
) -> RetentionReport:
    """Delete what the retention settings allow, table by table, and report what went."""
    started = time.monotonic()
    budget = settings["RETENTION_MAX_PASS_SECONDS"]
    report = RetentionReport()
    for table, source, cutoff, batches in _plans(session, settings, now or utcnow()):
        deleted = 0
        try:
            for count in batches:
                deleted += count
                report.batches += 1
                if budget > 0 and time.monotonic() - started >= budget:
                    report.deferred[table] = "time budget spent"
                    batches.close()
                    break
        except OperationalError as exc:
            session.rollback()
            if not _is_lock_wait(exc):
                raise
            report.deferred[table] = "database busy"
            log.warning("etl.retention.busy", table=table)
        if source is None:
            report.unified = deleted
        else:
            report.raw[source] = deleted
        log.info(
            "etl.retention.table",
            table=table,
            deleted=deleted,
            older_than=cutoff.isoformat(),
            deferred=report.deferred.get(table),
        )
    report.duration_ms = int((time.monotonic() - started) * 1000)
    log.info("etl.retention.done", **report.as_dict())
    return report
