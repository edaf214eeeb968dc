"""The run log under races and crashes: closing an abandoned run is safe and never rewinds."""

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from kasparro.db_types import utcnow
from kasparro.etl.pipeline import finish_run, ingest
from kasparro.etl.runs import start_run
from kasparro.etl.sources.base import ReadReport
from kasparro.extensions import db
from kasparro.models import Checkpoint, EtlRun
from tasks.etl import extract as extract_task
from tasks.etl import ingest as ingest_task
from tasks.etl import transform_and_upsert as transform_task
from tests.csv_files import write

APPENDED = "solana,Solana,122.1,2025-12-28T00:00:00Z\ncardano,Cardano,0.36,2025-12-28T00:00:00Z\n"


def make_stale(run_id: int) -> None:
    """Make a run look like its process died an hour ago."""
    db.session.execute(
        sa.update(EtlRun)
        .where(EtlRun.id == run_id)
        .values(status="RUNNING", heartbeat_at=utcnow() - timedelta(hours=1))
    )
    db.session.commit()


@pytest.mark.parametrize("outcome", ["SUCCESS", "PARTIAL"])
def test_closing_an_abandoned_run_keeps_the_status_of_a_run_that_finished_meanwhile(
    app, run_etl, outcome
):
    stale = start_run(db.session, "csv1", "cli", app.config)
    make_stale(stale)
    other = sa.create_engine(db.engine.url)
    finished = []

    def finish_meanwhile(conn, cursor, statement, parameters, context, executemany):
        # The stale run's own process finishes just before the successor closes it.
        if not finished and statement.lstrip().upper().startswith("UPDATE ETL_RUNS"):
            finished.append(statement)
            with other.begin() as connection:
                connection.execute(
                    sa.update(EtlRun)
                    .where(EtlRun.id == stale)
                    .values(status=outcome, finished_at=utcnow(), duration_ms=5)
                )

    sa.event.listen(db.engine, "before_cursor_execute", finish_meanwhile)
    try:
        successor = run_etl("csv1")["csv1"]
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", finish_meanwhile)
        other.dispose()

    assert finished
    db.session.expire_all()
    kept = db.session.get(EtlRun, stale)
    assert (kept.status, kept.error, kept.duration_ms) == (outcome, None, 5)
    assert successor.status == "SUCCESS"


@pytest.mark.parametrize("appended_batches", [1, 2])
def test_closing_an_abandoned_run_never_moves_its_checkpoint_back(
    app, run_etl, csv_paths, appended_batches
):
    assert run_etl("csv1")["csv1"].status == "SUCCESS"
    app.config["ETL_BATCH_SIZE"] = 2 if appended_batches == 1 else 1
    write(csv_paths["CSV1_PATH"], APPENDED, mode="a")
    # A run that committed its batches, then died before it could finish.
    dead = start_run(db.session, "csv1", "schedule", app.config)
    report = ingest(db.session, dead, app.config)
    finish_run(db.session, dead, report, app.config)
    make_stale(dead)
    checkpoint = db.session.get(Checkpoint, "csv1")
    covered = (dict(checkpoint.cursor), checkpoint.last_raw_id)

    successor = run_etl("csv1")["csv1"]

    closed = db.session.get(EtlRun, dead)
    assert closed.status == "FAILED"
    assert closed.error.startswith("abandoned: no progress since ")
    assert closed.checkpoint_after == covered[0]
    db.session.expire_all()
    checkpoint = db.session.get(Checkpoint, "csv1")
    assert (checkpoint.cursor, checkpoint.last_raw_id) == covered
    assert (successor.status, successor.rows_read, successor.inserted) == ("SUCCESS", 0, 0)


def test_a_read_report_crosses_the_task_queue_unchanged(app, csv_paths):
    write(csv_paths["CSV1_PATH"], "name,ID,value,timestamp\nBitcoin,bitcoin,1,2025-12-27")
    run_id = start_run(db.session, "csv1", "cli", app.config)
    report = ingest(db.session, run_id, app.config)
    assert report.fields.events and report.pending  # drift, and a record with no line end yet

    assert ReadReport.from_json(json.loads(json.dumps(report.to_json()))) == report


@pytest.mark.parametrize("stop_after_first", [False, True])
def test_a_chain_queued_under_the_former_task_names_still_finishes_its_run(app, stop_after_first):
    # etl.extract and etl.transform_and_upsert are now etl.ingest and etl.finish_run; a chain
    # queued before the upgrade may have its first task run before it, or after.
    run_id = start_run(db.session, "csv1", "cli", app.config)
    first = ingest_task if stop_after_first else extract_task
    extracted = first.apply(args=(run_id,)).get()

    finished = transform_task.apply(args=(extracted,)).get()

    assert finished == {"run_id": run_id, "status": "SUCCESS"}
    assert db.session.get(EtlRun, run_id).inserted == 14
