"""Reprocess: re-derive a source's unified rows from its stored raw rows, as a run.

After a parser fix or a new alias, the raw rows already stored say more than the unified rows
made from them. A reprocess reads them again in id order, batch by batch (``ETL_BATCH_SIZE``),
and puts each batch through the same transform and upsert as a run: observations are inserted
or updated where they differ, rows rejected before that now pass leave ``rejected_records`` in
the batch's transaction, and rows still rejected stay there, with the reason (and the run) of
this reprocess when the reason changed. Rows still rejected count as ``rejected``, so a
reprocess that leaves any ends PARTIAL, as a run does.

It is a run (trigger ``reprocess``) under the source's one-run lock, so it never overlaps a run
of the same source, and it reads only raw rows the checkpoint covers: rows past it belong to the
next run, and the checkpoint itself never moves. It is idempotent: a second reprocess finds
every observation as it is, and counts it unchanged, and every rejection as it is, and writes
nothing.

``since`` is when Kasparro received the raw row (its ``received_at``), not the observation's own
time: a rejected row may have no readable time, and raw rows are received in id order, so the
first row received at or after ``since`` is found by a binary search over the primary key.
"""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from kasparro.db_types import utcnow
from kasparro.etl.assets import AssetResolver, CurrentResolver
from kasparro.etl.load import UNIFIED_KEY, insert_rejections, upsert_unified
from kasparro.etl.pipeline import transform_batch
from kasparro.etl.runs import fail_run, finish_run, heartbeat_or_abandon, start_run
from kasparro.etl.sources import get_source
from kasparro.etl.sources.base import Source
from kasparro.models import (
    Checkpoint,
    EtlRun,
    RawRecordMixin,
    RejectedRecord,
    RunStatus,
)

log = structlog.get_logger(__name__)
KEYS_PER_LOOKUP = 1000  # rejections per UPDATE: 2 parameters each, within SQLite's limit


def reprocess_source(
    session: Session,
    source: str,
    settings: dict[str, Any],
    since: datetime | None = None,
    task_id: str | None = None,
) -> EtlRun:
    """Re-derive ``source``'s unified rows from its stored raw rows, as a run; return the run.

    Raises SourceBusy, after recording a SKIPPED run, when the source is already running.
    """
    run_id = start_run(session, source, "reprocess", settings, task_id)
    with structlog.contextvars.bound_contextvars(run_id=run_id, source=source):
        try:
            _reprocess(session, run_id, settings, since)
        except Exception as exc:  # every failure is recorded on the run, never lost
            fail_run(session, run_id, exc)
    return session.get_one(EtlRun, run_id)


def _reprocess(
    session: Session, run_id: int, settings: dict[str, Any], since: datetime | None
) -> None:
    run = session.get_one(EtlRun, run_id)
    source = get_source(run.source, settings)
    checkpoint = session.get(Checkpoint, run.source)
    covered = checkpoint.last_raw_id if checkpoint else 0
    model = source.raw_model
    after = last_raw_id_before(session, model, since, covered) if since else 0
    resolvers = CurrentResolver(settings["ASSETS_SEED_PATH"])
    columns = model.__table__.c
    recovered = 0
    # Plain rows, not ORM objects, one batch in memory at a time: a keyset walk over the id.
    while raws := session.execute(
        sa.select(*columns)
        .where(columns.id > after, columns.id <= covered)
        .order_by(columns.id)
        .limit(settings["ETL_BATCH_SIZE"])
    ).all():
        recovered += _reprocess_batch(session, run, source, raws, resolvers.get(session))
        after = raws[-1].id
    run.details = {
        **(run.details or {}),
        "reprocess": {"since": since.isoformat() if since else None, "recovered": recovered},
    }
    log.info("etl.reprocess.done", rows_read=run.rows_read, recovered=recovered)
    status = RunStatus.PARTIAL if run.rejected else RunStatus.SUCCESS
    finish_run(session, run, status, checkpoint.cursor if checkpoint else None)


def last_raw_id_before(
    session: Session, model: type[RawRecordMixin], since: datetime, last: int
) -> int:
    """Return the highest raw id up to ``last`` received before ``since`` (0 when none was).

    A source stores its raw rows one run at a time, so ``received_at`` grows with the id: a
    binary search over the primary key finds the boundary in a few dozen index probes.
    """
    before, from_ = 0, last + 1  # ids up to ``before`` came earlier; from ``from_`` on, not
    while from_ - before > 1:
        middle = (before + from_) // 2
        row = session.execute(
            sa.select(model.id, model.received_at)
            .where(model.id >= middle, model.id <= last)
            .order_by(model.id)
            .limit(1)
        ).first()
        if row is None or row.received_at >= since:
            from_ = middle
        else:
            before = row.id
    return before


def _reprocess_batch(
    session: Session,
    run: EtlRun,
    source: Source,
    raws: list[Any],
    resolver: AssetResolver,
) -> int:
    """Transform and upsert one batch, retry its rejected rows; commit; return how many passed."""
    run.rows_read += len(raws)
    # No read happened: the stored rows' own fields say where each value is.
    unified, rejections = transform_batch(
        session, source, run, raws, source.stored_report(raws), resolver
    )
    # A key that several raw rows state (a line read again in a later generation of its file,
    # corrected) holds what the newest says: in the batch the last row of a key wins, and the
    # upsert writes no stored row that a later raw row made (Source.states_anew).
    latest = {tuple(row[column] for column in UNIFIED_KEY): row for row in unified}
    counts = upsert_unified(session, list(latest.values()))
    run.inserted += counts.inserted
    run.updated += counts.updated
    run.unchanged += counts.unchanged + len(unified) - len(latest)
    # The unified rows first, then the rejections: their counts triggers lock per source, and
    # holding that lock while waiting for a unified row another writer holds could deadlock.
    # A rejection is stored under its line's content (Source.content_keys): the reading that
    # first refused the line may lie outside this reprocess (before --since, or deleted).
    still_rejected = {rejection["record_key"] for rejection in rejections}
    passed = [raw for raw in raws if raw.record_key not in still_rejected]
    recovered = 0
    if passed:
        contents = list(source.content_keys(session, passed).values())
        recovered = session.execute(
            sa.delete(RejectedRecord)
            .where(RejectedRecord.source == run.source, RejectedRecord.content_key.in_(contents))
            .execution_options(synchronize_session=False)
        ).rowcount
    _restate_reasons(session, run, rejections)
    insert_rejections(session, rejections)
    run.rejected += len(rejections)  # still rejected, as before or for the first time
    heartbeat_or_abandon(session, run)
    session.commit()
    return recovered


def _restate_reasons(session: Session, run: EtlRun, rejections: list[dict[str, Any]]) -> None:
    """Give the stored rejections whose reason changed the new reason, time and run.

    One UPDATE per ``KEYS_PER_LOOKUP`` rejections, matching only rows whose reason differs: a
    reason that did not change leaves its row as it was, so a second reprocess writes nothing.
    """
    for start in range(0, len(rejections), KEYS_PER_LOOKUP):
        chunk = {
            row["content_key"]: row["reason"] for row in rejections[start : start + KEYS_PER_LOOKUP]
        }
        reason = sa.case(chunk, value=RejectedRecord.content_key)
        session.execute(
            sa.update(RejectedRecord)
            .where(
                RejectedRecord.source == run.source,
                RejectedRecord.content_key.in_(list(chunk)),
                RejectedRecord.reason != reason,
            )
            .values(reason=reason, run_id=run.id, rejected_at=utcnow())
            .execution_options(synchronize_session=False)
        )
