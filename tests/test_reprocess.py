"""Reprocess: stored raw rows are derived again after a fix, as a run; only what differs changes."""

import re
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from kasparro.etl.left_over import load_left_over
from kasparro.etl.load import insert_raw
from kasparro.etl.parsing import InvalidValue, parse_timestamp
from kasparro.etl.runs import fail_run, start_run
from kasparro.etl.sources import csv_feed, get_source
from kasparro.extensions import db
from kasparro.models import (
    AssetAlias,
    Checkpoint,
    EtlRun,
    RawCsvRecord,
    RejectedRecord,
    UnifiedRecord,
)
from tests.csv_files import loaded_values, rejections, write
from tests.test_maintained_counts import assert_exact

DOTTED_DATE = "dot-1,Bitcoin,90000,28.12.2025"  # day.month.year: no parser of the feeds reads it
BUNDLED_CSV1_ROWS = 14
# What a reprocess may change besides the data: its own run, and the counters that follow runs.
RUN_TABLES = {"etl_runs", "run_summaries", "data_versions"}


def reads_dotted_dates(real):
    """Return ``real`` (a timestamp parser) fixed to read ``28.12.2025`` as a day-first date."""

    def parse(raw):
        if isinstance(raw, str) and re.fullmatch(r"\d{2}\.\d{2}\.\d{4}", raw.strip()):
            return datetime.strptime(raw.strip(), "%d.%m.%Y").replace(tzinfo=UTC)
        return real(raw)

    return parse


def append(path, *lines: str) -> None:
    """Append ``lines`` to the CSV feed at ``path``."""
    with open(path, "a", encoding="utf-8") as feed:
        feed.writelines(line + "\n" for line in lines)


def checkpoint(source: str) -> tuple:
    """Return everything a source's checkpoint holds."""
    db.session.expire_all()
    point = db.session.get(Checkpoint, source)
    return (point.cursor, point.last_raw_id, point.last_external_id, point.run_id, point.updated_at)


def newest_run() -> EtlRun:
    """Return the newest run of any source."""
    db.session.expire_all()
    return db.session.scalars(sa.select(EtlRun).order_by(EtlRun.id.desc()).limit(1)).one()


def counts(run: EtlRun) -> dict:
    """Return a run's trigger, status and counts."""
    names = ("trigger", "status", "rows_read", "inserted", "updated", "unchanged", "rejected")
    return {name: getattr(run, name) for name in names}


def reprocess(runner, *args: str):
    """Run ``flask etl reprocess`` with ``args``; return the result."""
    return runner.invoke(args=["etl", "reprocess", *args])


def assert_csv1_reprocess_changes_nothing(runner, rejected: int) -> None:
    """Reprocess csv1 (its bundled rows and the dotted one); check it found them as they were.

    ``rejected`` rows are still rejected: they count as rejected, and make the run PARTIAL.
    """
    done = reprocess(runner, "--source", "csv1")
    assert done.exit_code == 0, done.output
    assert counts(newest_run()) == {
        "trigger": "reprocess",
        "status": "PARTIAL" if rejected else "SUCCESS",
        "rows_read": BUNDLED_CSV1_ROWS + 1,
        "inserted": 0,
        "updated": 0,
        "unchanged": BUNDLED_CSV1_ROWS + 1 - rejected,
        "rejected": rejected,
    }


@pytest.fixture
def rejected_row(app, csv_paths, run_etl):
    """Load csv1 with one row it rejects: a date no parser reads."""
    append(csv_paths["CSV1_PATH"], DOTTED_DATE)
    run = run_etl("csv1")["csv1"]
    assert (run.status, run.rejected) == ("PARTIAL", 1)
    assert rejections("csv1") == [("line 16", "unrecognised timestamp: '28.12.2025'")]


def test_a_reprocess_after_a_parser_fix_turns_a_rejected_row_into_an_observation(
    runner, rejected_row, monkeypatch, table_counts
):
    before = checkpoint("csv1")
    monkeypatch.setattr(csv_feed, "parse_timestamp", reads_dotted_dates(parse_timestamp))

    done = reprocess(runner, "--source", "csv1")

    assert done.exit_code == 0, done.output
    assert "SUCCESS" in done.output and "recovered=1" in done.output
    run = newest_run()
    assert counts(run) == {
        "trigger": "reprocess",
        "status": "SUCCESS",
        "rows_read": BUNDLED_CSV1_ROWS + 1,
        "inserted": 1,
        "updated": 0,
        "unchanged": BUNDLED_CSV1_ROWS,
        "rejected": 0,
    }
    assert run.details["reprocess"] == {"since": None, "recovered": 1}
    assert rejections("csv1") == []
    assert loaded_values("csv1")["dot-1"] == "90000"
    row = db.session.scalars(sa.select(UnifiedRecord).where(UnifiedRecord.external_id == "dot-1"))
    assert [(r.asset_id, r.timestamp, r.run_id) for r in row] == [
        ("bitcoin", datetime(2025, 12, 28, tzinfo=UTC), run.id)
    ]
    assert checkpoint("csv1") == before
    assert run.checkpoint_before == run.checkpoint_after == before[0]
    assert_exact()

    # A second reprocess finds everything as it is.
    tables = table_counts()
    assert_csv1_reprocess_changes_nothing(runner, rejected=0)
    changed = {name for name, count in table_counts().items() if tables[name] != count}
    assert changed <= RUN_TABLES
    assert checkpoint("csv1") == before


def rejected_rows() -> list[tuple]:
    """Return every stored rejection: its key, reason, run and time."""
    db.session.expire_all()
    return db.session.execute(
        sa.select(
            RejectedRecord.record_key,
            RejectedRecord.reason,
            RejectedRecord.run_id,
            RejectedRecord.rejected_at,
        ).order_by(RejectedRecord.id)
    ).all()


def test_a_row_still_rejected_stays_rejected_counts_rejected_and_makes_the_run_partial(
    runner, rejected_row, table_counts
):
    stored = rejected_rows()

    assert_csv1_reprocess_changes_nothing(runner, rejected=1)

    assert rejections("csv1") == [("line 16", "unrecognised timestamp: '28.12.2025'")]
    assert rejected_rows() == stored  # the same reason: its first rejection stays as it was
    tables = table_counts()
    assert_csv1_reprocess_changes_nothing(runner, rejected=1)
    assert {name for name, count in table_counts().items() if tables[name] != count} <= RUN_TABLES
    assert rejected_rows() == stored


def test_a_row_rejected_for_a_new_reason_keeps_the_new_reason_once(
    runner, rejected_row, monkeypatch, table_counts
):
    def refuses_dotted_dates(raw):
        if isinstance(raw, str) and "." in raw:
            raise InvalidValue(f"dotted date: {raw!r}")
        return parse_timestamp(raw)

    monkeypatch.setattr(csv_feed, "parse_timestamp", refuses_dotted_dates)

    assert_csv1_reprocess_changes_nothing(runner, rejected=1)

    run = newest_run()
    assert rejections("csv1") == [("line 16", "dotted date: '28.12.2025'")]
    [(_, _, run_id, rejected_at)] = stored = rejected_rows()
    assert run_id == run.id
    assert rejected_at >= run.started_at
    assert_exact()
    # Idempotent: a second reprocess writes nothing new.
    tables = table_counts()
    assert_csv1_reprocess_changes_nothing(runner, rejected=1)
    assert {name for name, count in table_counts().items() if tables[name] != count} <= RUN_TABLES
    assert rejected_rows() == stored


@pytest.mark.parametrize("source", ["coingecko_api", "csv1", "csv2"])
def test_a_reprocess_of_what_nothing_changed_changes_nothing(runner, run_etl, table_counts, source):
    first = run_etl(source)[source]
    tables, values = table_counts(), loaded_values(source)

    done = reprocess(runner, "--source", source)

    assert done.exit_code == 0, done.output
    run = newest_run()
    assert (run.trigger, run.inserted, run.updated) == ("reprocess", 0, 0)
    assert (run.status, run.rejected) == (first.status, first.rejected)  # still rejected
    assert run.rows_read == first.rows_read
    assert run.unchanged == first.inserted
    changed = {name for name, count in table_counts().items() if tables[name] != count}
    assert changed <= RUN_TABLES
    assert loaded_values(source) == values


def test_a_reprocess_while_the_source_runs_is_refused(app, runner, rejected_row, monkeypatch):
    running = start_run(db.session, "csv1", "cli", app.config)
    monkeypatch.setattr(csv_feed, "parse_timestamp", reads_dotted_dates(parse_timestamp))

    done = reprocess(runner, "--source", "csv1")

    assert done.exit_code == 1
    assert f"SKIPPED: csv1 is already running as run {running}" in done.output
    skipped = newest_run()
    assert (skipped.trigger, skipped.status) == ("reprocess", "SKIPPED")
    assert len(rejections("csv1")) == 1  # nothing was done
    fail_run(db.session, running, RuntimeError("the test is over"))


def test_since_bounds_the_raw_rows_read_by_when_they_were_received(app, runner, csv_paths, run_etl):
    run_etl("csv1")
    # The bundled rows came in long ago; the next run's rows now.
    db.session.execute(sa.update(RawCsvRecord).values(received_at=datetime(2025, 1, 1, tzinfo=UTC)))
    db.session.commit()
    append(csv_paths["CSV1_PATH"], "late-1,Bitcoin,1,2025-12-28", "late-2,Bitcoin,2,2025-12-28")
    run_etl("csv1")

    recent = reprocess(runner, "--source", "csv1", "--since", "2025-06-01")
    assert recent.exit_code == 0, recent.output
    assert newest_run().rows_read == 2
    assert newest_run().details["reprocess"]["since"] == "2025-06-01T00:00:00+00:00"

    assert reprocess(runner, "--source", "csv1", "--since", "2024-12-31T23:00").exit_code == 0
    assert newest_run().rows_read == BUNDLED_CSV1_ROWS + 2
    assert reprocess(runner, "--source", "csv1", "--since", "2100-01-01").exit_code == 0
    assert newest_run().rows_read == 0

    bad = reprocess(runner, "--source", "csv1", "--since", "soon")
    assert bad.exit_code == 2
    assert "--since" in bad.output and "unrecognised timestamp" in bad.output


def test_a_reprocess_after_a_new_alias_derives_the_asset_ids_again(runner, csv_paths, run_etl):
    append(csv_paths["CSV1_PATH"], "xbt-1,XBT Coin,1,2025-12-28", "xbt-2,Xbt coin,2,2025-12-29")
    run_etl("csv1")
    # Stored by hand, as a restore would: nothing back-fills it.
    db.session.add(AssetAlias(kind="name", alias="xbt coin", asset_id="bitcoin"))
    db.session.commit()

    done = reprocess(runner, "--source", "csv1")

    assert done.exit_code == 0, done.output
    run = newest_run()
    assert (run.inserted, run.updated, run.unresolved) == (0, 2, 0)
    resolved = db.session.execute(
        sa.select(UnifiedRecord.asset_id, UnifiedRecord.symbol).where(
            UnifiedRecord.external_id.in_(("xbt-1", "xbt-2"))
        )
    ).all()
    assert resolved == [("bitcoin", "BTC"), ("bitcoin", "BTC")]
    assert_exact()


def test_a_line_corrected_in_a_later_reading_of_the_file_keeps_its_correction(
    app, runner, csv_paths, run_etl
):
    run_etl("csv1")
    path = csv_paths["CSV1_PATH"]
    with open(path, encoding="utf-8") as feed:
        text = feed.read()
    # An edit above the checkpoint: the file is read again from its top, as a new generation.
    write(path, text.replace("bitcoin,Bitcoin,87387.00", "bitcoin,Bitcoin,87400.00"))
    corrected = run_etl("csv1")["csv1"]
    assert (corrected.updated, corrected.unchanged) == (1, BUNDLED_CSV1_ROWS - 1)
    app.config["ETL_BATCH_SIZE"] = 5  # the older reading's line lands in another batch

    done = reprocess(runner, "--source", "csv1")

    assert done.exit_code == 0, done.output
    run = newest_run()
    assert (run.rows_read, run.inserted, run.updated) == (2 * BUNDLED_CSV1_ROWS, 0, 0)
    bitcoin = db.session.scalar(
        sa.select(UnifiedRecord.value).where(
            UnifiedRecord.external_id == "bitcoin",
            UnifiedRecord.timestamp == datetime(2025, 12, 27, 10, 46, 21, tzinfo=UTC),
        )
    )
    assert str(bitcoin) == "87400"  # in its canonical text


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("csv1", ["past-1,Past Coin,1.5,2025-12-29", "past-2,Past Coin,2.5,2025-12-30"]),
        (
            "csv2",
            ["past-1,Past Coin (PST),1.5M,2025-12-29", "past-2,Past Coin (PST),2M,12/30/2025"],
        ),
    ],
)
def test_raw_rows_past_the_checkpoint_are_left_to_load_left_over(
    app, runner, csv_paths, run_etl, source, lines
):
    run_etl(source)
    before = checkpoint(source)
    append(csv_paths[get_source(source, app.config).path_setting], *lines)
    # Stored past the checkpoint, not loaded: as an earlier version's run that stopped between
    # its two passes.
    run_id = start_run(db.session, source, "cli", app.config)
    reader = get_source(source, app.config)
    stored = list(reader.read(db.session, db.session.get(Checkpoint, source)))
    insert_raw(db.session, reader.raw_model, stored, run_id)
    db.session.commit()
    fail_run(db.session, run_id, RuntimeError("stopped before loading"))
    assert len(stored) == len(lines)

    done = reprocess(runner, "--source", source)

    assert done.exit_code == 0, done.output
    assert checkpoint(source) == before
    past = sa.select(UnifiedRecord.external_id).where(
        UnifiedRecord.source == source, UnifiedRecord.external_id.like("past-%")
    )
    assert db.session.scalars(past).all() == []
    covered = sa.select(sa.func.count()).where(reader.raw_model.id <= before[1])
    assert newest_run().rows_read == db.session.scalar(covered)  # and no other raw row
    assert load_left_over(db.session, source, app.config).status == "SUCCESS"  # loads them
    assert sorted(db.session.scalars(past)) == ["past-1", "past-2"]


def read_again_as_a_new_generation(app, csv_paths, run_etl) -> None:
    """Edit csv1's first row, so the whole file is read again; date its first reading long ago."""
    path = csv_paths["CSV1_PATH"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    fields = lines[1].split(",")
    lines[1] = ",".join([*fields[:2], fields[2] + "1", *fields[3:]])
    db.session.execute(sa.update(RawCsvRecord).values(received_at=datetime(2025, 1, 1, tzinfo=UTC)))
    db.session.commit()
    path.write_text("".join(lines), encoding="utf-8")
    run = run_etl("csv1")["csv1"]
    assert run.rejected == 1 and len(rejections("csv1")) == 1  # known: not recorded again


def test_a_line_that_passes_in_a_later_reading_clears_its_rejection(
    app, runner, rejected_row, csv_paths, run_etl, monkeypatch
):
    read_again_as_a_new_generation(app, csv_paths, run_etl)
    monkeypatch.setattr(csv_feed, "parse_timestamp", reads_dotted_dates(parse_timestamp))

    # Only the later reading is reprocessed: the rejection was stored under the first one's key.
    done = reprocess(runner, "--source", "csv1", "--since", "2025-06-01")

    assert done.exit_code == 0, done.output
    assert newest_run().details["reprocess"]["recovered"] == 1
    assert rejections("csv1") == []
    assert_exact()


def test_a_line_rejected_anew_in_a_later_reading_keeps_one_rejection_with_the_new_reason(
    app, runner, rejected_row, csv_paths, run_etl, monkeypatch
):
    read_again_as_a_new_generation(app, csv_paths, run_etl)
    [(_, _, _, first_rejected_at)] = rejected_rows()

    def refuses_dotted_dates(raw):
        if isinstance(raw, str) and "." in raw:
            raise InvalidValue(f"dotted date: {raw!r}")
        return parse_timestamp(raw)

    monkeypatch.setattr(csv_feed, "parse_timestamp", refuses_dotted_dates)

    done = reprocess(runner, "--source", "csv1", "--since", "2025-06-01")

    assert done.exit_code == 0, done.output
    assert [reason for _, reason in rejections("csv1")] == ["dotted date: '28.12.2025'"]
    [(_, _, run_id, rejected_at)] = rejected_rows()
    run = newest_run()
    assert (run_id, run.status, run.rejected) == (run.id, "PARTIAL", 1)
    assert rejected_at > first_rejected_at
    assert_exact()
