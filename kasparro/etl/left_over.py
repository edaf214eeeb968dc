"""One-offs for what an earlier version left: raw rows stored but not loaded, and CSV
checkpoints written before they carried a file fingerprint (``flask etl load-left-over``).

An earlier version loaded a run's raw rows in a second pass; the pipeline now stores and loads
each batch in one transaction, and refuses to run past rows left waiting (``LeftOverRows``).
"""

from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from kasparro.etl.pipeline import BatchLoader, finish_run, raw_rows_wait
from kasparro.etl.runs import fail_run, start_run
from kasparro.etl.sources import get_source
from kasparro.etl.sources.base import ReadReport
from kasparro.etl.sources.csv_read import CsvFileReader
from kasparro.models import Checkpoint, EtlRun


def fingerprint_checkpoint(session: Session, source: str, settings: dict[str, Any]) -> bool:
    """Add its fingerprint to a file source's checkpoint from before fingerprints; a one-off.

    Return whether it was added: without it the file's next read starts again from the top.
    """
    reader = get_source(source, settings)
    checkpoint = session.get(Checkpoint, source)
    if not isinstance(reader, CsvFileReader) or checkpoint is None:
        return False
    cursor = reader.fingerprinted(checkpoint.cursor)
    if cursor is None:
        return False
    checkpoint.cursor = cursor
    session.commit()
    return True


def load_left_over(session: Session, source: str, settings: dict[str, Any]) -> EtlRun | None:
    """Load the raw rows of ``source`` an earlier version stored without loading; a one-off.

    An earlier version loaded in a second pass, so a run that stopped between its passes left
    raw rows past the checkpoint. They are loaded in id order, in batches, by a run of their own,
    which is returned; None when no row waits.
    """
    reader = get_source(source, settings)
    checkpoint = session.get(Checkpoint, source)
    if not raw_rows_wait(session, reader.raw_model, checkpoint.last_raw_id if checkpoint else 0):
        return None
    run_id = start_run(session, source, "cli", settings)
    with structlog.contextvars.bound_contextvars(run_id=run_id, source=source):
        try:
            loader = BatchLoader(session, session.get_one(EtlRun, run_id), reader, settings)
            # Plain rows, not ORM objects: a raw record is only read here, never changed.
            columns = reader.raw_model.__table__.c
            while raws := session.execute(
                sa.select(*columns)
                .where(columns.id > loader.checkpoint.last_raw_id)
                .order_by(columns.id)
                .limit(settings["ETL_BATCH_SIZE"])
            ).all():
                loader.load(raws, reader.stored_report(raws))
            finish_run(session, run_id, ReadReport(), settings)
        except Exception as exc:  # every failure is recorded on the run, never lost
            fail_run(session, run_id, exc)
    return session.get_one(EtlRun, run_id)
