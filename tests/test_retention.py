"""Retention: old raw rows the transform covered go in short batches; nothing else is lost."""

import json
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from kasparro import create_app
from kasparro.celery_config import celery_settings
from kasparro.config import load_settings
from kasparro.db_types import utcnow
from kasparro.etl.left_over import load_left_over
from kasparro.etl.pipeline import finish_run, ingest, run_source
from kasparro.etl.retention import apply_retention, raw_batches
from kasparro.etl.runs import start_run
from kasparro.etl.sources import SOURCES
from kasparro.extensions import db
from kasparro.models import Checkpoint, EtlRun, UnifiedRecord
from tasks.maintenance import retention
from tests.coingecko_imitation import BASE_TIME, make_coins
from tests.conftest import store_without_loading

ALL_KEPT = {
    "RETENTION_RAW_DAYS_COINGECKO_API": 0,
    "RETENTION_RAW_DAYS_CSV1": 0,
    "RETENTION_RAW_DAYS_CSV2": 0,
    "RETENTION_UNIFIED_DAYS": 0,
}


def policy(app, **overrides) -> dict:
    """Return the app's settings with every retention off but ``overrides``, and no pauses."""
    return {**app.config, **ALL_KEPT, "RETENTION_PAUSE_SECONDS": 0.0, **overrides}


def raw_model(source: str):
    return SOURCES[source].raw_model


def raw_ids(source: str) -> list[int]:
    model = raw_model(source)
    return db.session.scalars(sa.select(model.id).order_by(model.id)).all()


def age_raw_rows(source: str, days: float, up_to_id: int | None = None) -> None:
    """Make a source's raw rows (up to ``up_to_id``) look received ``days`` ago."""
    model = raw_model(source)
    statement = sa.update(model).values(received_at=utcnow() - timedelta(days=days))
    if up_to_id is not None:
        statement = statement.where(model.id <= up_to_id)
    db.session.execute(statement)
    db.session.commit()


def unified_count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(UnifiedRecord))


def add_fresh_input(source: str, coingecko, csv_paths, count: int = 2) -> None:
    """Give ``source`` ``count`` new records for its next run."""
    if source == "coingecko_api":
        for coin in coingecko.coins[:count]:
            coingecko.move_price(coin["id"], coin["current_price"] * 1.01)
        return
    with open(csv_paths["CSV1_PATH"], "a") as feed:
        for n in range(count):
            feed.write(f"new-coin-{n},New Coin {n},{n + 1}.5,2025-12-28T00:00:0{n % 10}Z\n")


@pytest.mark.parametrize(
    ("source", "age_days", "row_age_days", "deleted"),
    [
        ("coingecko_api", 7, 8, True),
        ("coingecko_api", 7, 6, False),
        ("coingecko_api", 1, 2, True),
        ("csv1", 30, 31, True),
        ("csv1", 0, 3650, False),
        ("coingecko_api", -1, 3650, False),
    ],
)
def test_covered_raw_rows_older_than_their_age_are_deleted_and_younger_ones_kept(
    app, run_etl, coingecko, csv_paths, capfd, source, age_days, row_age_days, deleted
):
    run_etl(source)
    old = raw_ids(source)
    age_raw_rows(source, row_age_days)
    add_fresh_input(source, coingecko, csv_paths)
    run_etl(source)
    fresh = raw_ids(source)[len(old) :]
    observations = unified_count()

    report = apply_retention(
        db.session, policy(app, **{f"RETENTION_RAW_DAYS_{source.upper()}": age_days})
    )

    assert raw_ids(source) == (fresh if deleted else old + fresh)
    assert report.raw.get(source, 0) == (len(old) if deleted else 0)
    assert unified_count() == observations  # observations are kept by default
    logged = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if "retention" in line
    ]
    done = next(entry for entry in logged if entry["event"] == "etl.retention.done")
    assert done["raw"] == report.raw


@pytest.mark.parametrize("row_age_days", [8, 3650])
def test_raw_rows_not_transformed_yet_are_kept_whatever_their_age(
    app, run_etl, coingecko, csv_paths, row_age_days
):
    run_etl("coingecko_api")
    covered = raw_ids("coingecko_api")
    add_fresh_input("coingecko_api", coingecko, csv_paths, count=3)
    store_without_loading("coingecko_api", app.config)
    waiting = raw_ids("coingecko_api")[len(covered) :]
    age_raw_rows("coingecko_api", row_age_days)

    report = apply_retention(db.session, policy(app, RETENTION_RAW_DAYS_COINGECKO_API=7))

    assert report.raw == {"coingecko_api": len(covered)}
    assert raw_ids("coingecko_api") == waiting
    before = unified_count()
    assert load_left_over(db.session, "coingecko_api", app.config).status == "SUCCESS"
    assert unified_count() == before + 3 * 3  # the kept rows are loaded: price, cap, volume


@pytest.mark.parametrize("appended", [1, 20])
def test_the_newest_raw_row_is_kept_so_rows_read_later_are_still_transformed(
    app, run_etl, coingecko, csv_paths, appended
):
    # SQLite numbers a new row from the highest id left: were every row deleted, new rows would
    # take ids the checkpoint already covers, and the transform would never see them.
    run_etl("csv1")
    age_raw_rows("csv1", 400)
    apply_retention(db.session, policy(app, RETENTION_RAW_DAYS_CSV1=1))
    assert len(raw_ids("csv1")) == 1
    before = unified_count()

    add_fresh_input("csv1", coingecko, csv_paths, count=appended)
    run = run_etl("csv1")["csv1"]

    assert (run.status, run.inserted) == ("SUCCESS", appended)
    assert unified_count() == before + appended


@pytest.mark.parametrize(
    ("batch_size", "expected"),
    [(1, [1] * 25), (10, [10, 10, 5]), (25, [25]), (1000, [25])],
)
def test_deletion_goes_in_batches_of_the_configured_size_each_in_its_own_transaction(
    app, run_etl, coingecko, csv_paths, batch_size, expected
):
    coingecko.coins = make_coins(25)
    run_etl("coingecko_api")
    age_raw_rows("coingecko_api", 30)
    add_fresh_input("coingecko_api", coingecko, csv_paths, count=1)
    run_etl("coingecko_api")
    steps = []
    engine = db.engine

    def record_delete(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("DELETE"):
            steps.append("delete")

    def record_commit(conn):
        steps.append("commit")

    event.listen(engine, "before_cursor_execute", record_delete)
    event.listen(engine, "commit", record_commit)
    try:
        counts = list(
            raw_batches(db.session, "coingecko_api", utcnow() - timedelta(days=7), batch_size)
        )
    finally:
        event.remove(engine, "before_cursor_execute", record_delete)
        event.remove(engine, "commit", record_commit)

    assert counts == expected
    deletes = [i for i, step in enumerate(steps) if step == "delete"]
    assert len(deletes) == len(expected)
    for here, following in zip(deletes, [*deletes[1:], len(steps)], strict=True):
        assert "commit" in steps[here:following]  # each batch commits before the next begins
    assert len(raw_ids("coingecko_api")) == 1


@pytest.mark.parametrize(("unified_days", "deleted"), [(0, 0), (15, 5 * 3), (40, 0)])
def test_observations_are_kept_unless_a_unified_age_is_configured(
    app, run_etl, coingecko, unified_days, deleted
):
    run_etl("coingecko_api")
    coingecko.move_price("bitcoin", 90000, seconds_later=20 * 86400)
    run_etl("coingecko_api")
    assert unified_count() == 6 * 3
    now = BASE_TIME + timedelta(days=30)  # the first observations are 30 days old, bitcoin's 10

    report = apply_retention(db.session, policy(app, RETENTION_UNIFIED_DAYS=unified_days), now)

    assert report.unified == deleted
    assert unified_count() == 6 * 3 - deleted
    if deleted:
        left = db.session.execute(sa.select(UnifiedRecord.external_id, UnifiedRecord.timestamp))
        assert {tuple(row) for row in left} == {("bitcoin", BASE_TIME + timedelta(days=20))}


def test_a_retention_pass_does_not_hold_up_an_etl_batch_that_is_open(
    app, run_etl, coingecko, csv_paths, database_url
):
    coingecko.coins = make_coins(30)
    run_etl("coingecko_api")
    age_raw_rows("coingecko_api", 30)
    add_fresh_input("coingecko_api", coingecko, csv_paths, count=10)
    run_id = start_run(db.session, "coingecko_api", "cli", app.config)
    report = ingest(db.session, run_id, app.config)
    settings = policy(app, RETENTION_RAW_DAYS_COINGECKO_API=7)
    outcome: dict = {}

    def retention_pass():
        engine = sa.create_engine(database_url)
        try:
            with Session(engine) as session:
                outcome["report"] = apply_retention(session, settings)
                outcome["done_at"] = time.monotonic()
        finally:
            engine.dispose()

    worker = threading.Thread(target=retention_pass)
    timings: dict = {}

    def while_the_batch_is_open(session):
        # The batch has written its observations and holds its locks; it has not committed.
        if timings:  # only the first commit: the batch's
            return
        worker.start()
        worker.join(timeout=30 if database_url.startswith("postgresql") else 0.5)
        timings["alive_at_commit"] = worker.is_alive()
        timings["commit_from"] = time.monotonic()

    def committed(session):
        timings.setdefault("committed_at", time.monotonic())

    session = db.session()
    event.listen(session, "before_commit", while_the_batch_is_open)
    event.listen(session, "after_commit", committed)
    try:
        status = finish_run(db.session, run_id, report, app.config)
    finally:
        event.remove(session, "before_commit", while_the_batch_is_open)
        event.remove(session, "after_commit", committed)
    worker.join(timeout=30)

    assert status == "SUCCESS"
    assert db.session.get(EtlRun, run_id).inserted == 10 * 3
    assert timings["committed_at"] - timings["commit_from"] < 1.0  # the batch did not wait
    assert outcome["report"].raw == {"coingecko_api": 30}
    assert outcome["report"].deferred == {}
    if database_url.startswith("postgresql"):
        # Row locks only: the pass went through beside the open batch.
        assert timings["alive_at_commit"] is False
        assert outcome["done_at"] < timings["commit_from"]
    else:
        # One writer at a time: the pass waited for the batch, which committed first.
        assert timings["alive_at_commit"] is True
        assert outcome["done_at"] > timings["committed_at"]
    assert len(raw_ids("coingecko_api")) == 10


def test_an_etl_run_commits_between_two_retention_batches(
    settings, coingecko, csv_paths, database_url
):
    # If a pass held anything between its batches, this run, in the same thread, would fail on
    # a lock timeout instead of waiting for ever.
    lock_wait = {"options": "-c lock_timeout=3000"} if database_url.startswith("postgresql") else {}
    settings["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {**lock_wait}}
    application = create_app(dict(settings))
    with application.app_context():
        coingecko.coins = make_coins(20)
        run_source(db.session, "coingecko_api", application.config)
        age_raw_rows("coingecko_api", 30)
        engine = sa.create_engine(database_url)
        try:
            with Session(engine) as session:
                batches = raw_batches(
                    session, "coingecko_api", utcnow() - timedelta(days=7), batch_size=5
                )
                first = next(batches)
                add_fresh_input("coingecko_api", coingecko, csv_paths, count=4)
                run = run_source(db.session, "coingecko_api", application.config)
                rest = list(batches)
        finally:
            engine.dispose()

        assert (run.status, run.inserted) == ("SUCCESS", 4 * 3)
        assert first + sum(rest) == 19  # the newest old row was the newest row when it began
        # Kept: the newest old row, the four moved coins, and the fifth coin, whose raw row went
        # in the first batch, so the run stored it again.
        assert len(raw_ids("coingecko_api")) == 1 + 4 + 1
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize(("purged", "unchanged", "raw_rows"), [(False, 5, 6), (True, 1 + 4 * 3, 5)])
def test_a_coin_read_again_after_its_raw_row_went_is_unchanged_not_new(
    app, run_etl, coingecko, csv_paths, purged, unchanged, raw_rows
):
    run_etl("coingecko_api")
    age_raw_rows("coingecko_api", 30)
    coingecko.move_price("bitcoin", 91000)
    run_etl("coingecko_api")
    if purged:
        apply_retention(db.session, policy(app, RETENTION_RAW_DAYS_COINGECKO_API=7))
    observations = unified_count()

    run = run_etl("coingecko_api")["coingecko_api"]

    # Without its raw row, an unmoved coin is stored and transformed again: its observations
    # are counted unchanged by the upsert instead of the record by the extraction.
    assert (run.status, run.inserted, run.updated, run.unchanged) == ("SUCCESS", 0, 0, unchanged)
    assert unified_count() == observations
    assert len(raw_ids("coingecko_api")) == raw_rows


def test_a_pass_that_spends_its_time_budget_leaves_the_rest_for_the_next_pass(
    app, run_etl, coingecko, csv_paths
):
    coingecko.coins = make_coins(12)
    run_etl("coingecko_api")
    age_raw_rows("coingecko_api", 30)
    add_fresh_input("coingecko_api", coingecko, csv_paths, count=1)
    run_etl("coingecko_api")
    settings = policy(
        app,
        RETENTION_RAW_DAYS_COINGECKO_API=7,
        RETENTION_BATCH_SIZE=5,
        RETENTION_MAX_PASS_SECONDS=1e-9,
    )

    reports = [apply_retention(db.session, settings) for _ in range(3)]

    assert [report.raw["coingecko_api"] for report in reports] == [5, 5, 2]
    assert [report.batches for report in reports] == [1, 1, 1]
    assert reports[0].deferred == {"raw_api_records": "time budget spent"}
    assert len(raw_ids("coingecko_api")) == 1


def test_a_pass_that_meets_a_lock_gives_way_and_leaves_the_table_for_later(
    app, run_etl, coingecko, csv_paths, database_url
):
    run_etl("coingecko_api")
    age_raw_rows("coingecko_api", 30)
    add_fresh_input("coingecko_api", coingecko, csv_paths, count=1)
    run_etl("coingecko_api")
    postgres = database_url.startswith("postgresql")
    holder = sa.create_engine(database_url)
    retention_engine = sa.create_engine(
        database_url, connect_args={} if postgres else {"timeout": 0.3}
    )
    try:
        with holder.connect() as conn, Session(retention_engine) as session:
            if postgres:  # another writer holds a lock on an old raw row
                conn.execute(sa.text("SELECT id FROM raw_api_records WHERE id = 1 FOR UPDATE"))
            else:  # another writer holds SQLite's write lock
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            started = time.monotonic()
            report = apply_retention(session, policy(app, RETENTION_RAW_DAYS_COINGECKO_API=7))
            waited = time.monotonic() - started
            conn.rollback()
            again = apply_retention(session, policy(app, RETENTION_RAW_DAYS_COINGECKO_API=7))
    finally:
        holder.dispose()
        retention_engine.dispose()

    assert report.deferred == {"raw_api_records": "database busy"}
    assert report.raw == {"coingecko_api": 0}
    assert waited < 2.0
    assert again.raw == {"coingecko_api": 5}


@pytest.mark.parametrize(("configured", "interval"), [(None, 3600.0), ("120", 120.0)])
def test_beat_schedules_retention_at_the_configured_interval(monkeypatch, configured, interval):
    if configured is not None:
        monkeypatch.setenv("SCHEDULE_RETENTION_SECONDS", configured)
    else:
        monkeypatch.delenv("SCHEDULE_RETENTION_SECONDS", raising=False)
    config = celery_settings(load_settings())
    entry, imports = config["beat_schedule"]["retention"], config["imports"]

    assert entry == {"task": "etl.retention", "schedule": interval}
    assert "tasks.maintenance" in imports


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        (
            {},
            {
                "RETENTION_RAW_DAYS_COINGECKO_API": 7,
                "RETENTION_RAW_DAYS_CSV1": 0,
                "RETENTION_RAW_DAYS_CSV2": 0,
                "RETENTION_UNIFIED_DAYS": 0,
                "RETENTION_BATCH_SIZE": 1000,
            },
        ),
        (
            {
                "RETENTION_RAW_DAYS_COINGECKO_API": "0",
                "RETENTION_RAW_DAYS_CSV2": "30",
                "RETENTION_UNIFIED_DAYS": "365",
                "RETENTION_BATCH_SIZE": "0",
            },
            {
                "RETENTION_RAW_DAYS_COINGECKO_API": 0,
                "RETENTION_RAW_DAYS_CSV1": 0,
                "RETENTION_RAW_DAYS_CSV2": 30,
                "RETENTION_UNIFIED_DAYS": 365,
                "RETENTION_BATCH_SIZE": 1,
            },
        ),
    ],
)
def test_retention_settings_come_from_the_environment(monkeypatch, environment, expected):
    for key in expected:
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)

    settings = load_settings()

    assert {key: settings[key] for key in expected} == expected


@pytest.mark.slow
def test_a_real_worker_runs_the_retention_task(broker_app, start_worker, coingecko):
    run_source(db.session, "coingecko_api", broker_app.config)
    age_raw_rows("coingecko_api", 8)
    coingecko.move_price("bitcoin", 91000)
    run_source(db.session, "coingecko_api", broker_app.config)
    observations = unified_count()
    worker = start_worker()

    result = retention.delay().get(timeout=60)

    assert result["raw"] == {"coingecko_api": 5}  # the default age: seven days
    assert result["unified"] == 0
    db.session.expire_all()
    assert raw_ids("coingecko_api") == [
        db.session.scalar(
            sa.select(Checkpoint.last_raw_id).where(Checkpoint.source == "coingecko_api")
        )
    ]
    assert unified_count() == observations
    assert '"etl.retention.done"' in worker.log()
