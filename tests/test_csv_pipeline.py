"""The CSV sources end to end: idempotence, appends, replaced files, bad rows, crash and resume."""

import pytest
import sqlalchemy as sa

from kasparro.extensions import db
from kasparro.models import Checkpoint, EtlRun, RawCsv2Record, RejectedRecord
from tests.csv_files import CSV1_HEADER, settle, unified_keys, write


def test_second_run_over_unchanged_input_adds_nothing(run_etl, table_counts):
    first = run_etl("csv1", "csv2")
    assert first["csv1"].status == "SUCCESS"
    assert first["csv2"].status == "PARTIAL"
    before = table_counts()

    second = run_etl("csv1", "csv2")

    assert table_counts() == {**before, "etl_runs": before["etl_runs"] + 2}
    for run in second.values():
        assert run.status == "SUCCESS"
        assert (run.rows_read, run.inserted, run.updated, run.rejected) == (0, 0, 0, 0)


def test_appended_rows_are_read_without_rereading_old_ones(run_etl, csv_paths):
    run_etl("csv1")
    before = unified_keys("csv1")
    write(
        csv_paths["CSV1_PATH"],
        "solana,Solana,122.10,2025-12-27T12:00:00Z\ncardano,Cardano,0.36,2025-12-27T12:00:00Z\n",
        mode="a",
    )

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rows_read, run.inserted) == ("SUCCESS", 2, 2)
    after = unified_keys("csv1")
    assert len(after) == len(before) + 2
    assert {key[0] for key in set(after) - set(before)} == {"solana", "cardano"}


def test_replaced_file_is_detected_and_reread_without_duplicates(run_etl, csv_paths, table_counts):
    run_etl("csv1")
    first_rows = len(unified_keys("csv1"))
    # Same length of history, different content: a rewrite, not an append.
    write(
        csv_paths["CSV1_PATH"],
        CSV1_HEADER
        + "bitcoin,Bitcoin,87387.00,2025-12-27T10:46:21Z\n"
        + "bitcoin,Bitcoin,90000.50,2025-12-28T00:00:00Z\n",
    )

    run = run_etl("csv1")["csv1"]

    assert run.status == "SUCCESS"
    assert (run.rows_read, run.inserted, run.unchanged) == (2, 1, 1)
    assert len(unified_keys("csv1")) == first_rows + 1
    assert db.session.get(Checkpoint, "csv1").cursor["generation"] == 2


def test_quirky_rows_are_parsed_or_rejected_on_purpose(run_etl):
    run = run_etl("csv2")["csv2"]

    reasons = dict(
        db.session.execute(
            sa.select(RejectedRecord.reference, RejectedRecord.reason).order_by(RejectedRecord.id)
        ).all()
    )
    assert reasons == {
        "line 13": "duplicate of line 12",
        "line 15": "not a number: 'N/A'",
        "line 16": "ambiguous date, day and month could be swapped: '03/04/2025'",
        "line 17": "malformed row: expected 4 fields, got 5",
    }
    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("PARTIAL", 16, 12, 4)
    values = {key[0]: (key[2].isoformat(), str(key[3])) for key in unified_keys("csv2")}
    assert values["mc-0001"] == ("2025-12-27T10:46:21+00:00", "1740000000000")
    assert values["mc-0002"] == ("2025-12-27T10:46:00+00:00", "352547418866")
    assert values["mc-0003"] == ("2025-12-27T00:00:00+00:00", "186790000000")
    assert values["mc-0004"] == ("2025-12-27T00:00:00+00:00", "112600000000")
    assert values["mc-0005"] == ("2025-12-27T10:46:21+00:00", "116041234567.5")
    assert values["mc-0006"] == ("2025-12-27T00:00:00+00:00", "68200000000")
    assert values["mc-0008"] == ("2025-12-27T10:46:21+00:00", "19100000000")
    # Every input row is accounted for: loaded, or rejected with a reason.
    stored = db.session.scalar(sa.select(sa.func.count()).select_from(RawCsv2Record))
    assert stored == run.rows_read == run.inserted + run.rejected


def test_bad_rows_do_not_block_good_rows_now_or_later(run_etl, csv_paths):
    write(
        csv_paths["CSV1_PATH"],
        CSV1_HEADER
        + "bitcoin,Bitcoin,87387.00,2025-12-27T10:46:21Z\n"
        + "bitcoin,Bitcoin,87387.00,2025-12-27T10:46:21Z\n"
        + "ethereum,Ethereum,2922.48,2025-12-27T10:46:21Z,extra\n"
        + "solana,Solana,12x.5,2025-12-27T10:46:21Z\n"
        + "tether,Tether,0.9995,2025-12-27T10:46:21Z\n",
    )
    first = run_etl("csv1")["csv1"]
    assert (first.status, first.inserted, first.rejected) == ("PARTIAL", 2, 3)

    write(csv_paths["CSV1_PATH"], "dogecoin,Dogecoin,0.1262,2025-12-27T10:46:21Z\n", mode="a")
    second = run_etl("csv1")["csv1"]

    assert (second.status, second.rows_read, second.inserted, second.rejected) == (
        "SUCCESS",
        1,
        1,
        0,
    )
    assert [key[0] for key in unified_keys("csv1")] == ["bitcoin", "dogecoin", "tether"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(RejectedRecord)) == 3


def test_injected_failure_mid_load_keeps_checkpoint_and_next_run_completes(
    app, run_etl, csv_paths, table_counts
):
    run_etl("csv1")
    checkpoint_before = dict(db.session.get(Checkpoint, "csv1").cursor)
    expected_rows = len(unified_keys("csv1")) + 3
    write(
        csv_paths["CSV1_PATH"],
        "".join(f"coin-{i},Coin {i},{i}.5,2025-12-28T00:00:0{i}Z\n" for i in range(3)),
        mode="a",
    )
    app.config["ETL_INJECT_FAILURE"] = "csv1:after_rows:2"

    failed = run_etl("csv1")["csv1"]

    assert failed.status == "FAILED"
    assert failed.error == "InjectedFailure: injected failure: csv1 at after_rows after 2 rows"
    assert failed.finished_at is not None
    assert db.session.get(Checkpoint, "csv1").cursor == checkpoint_before
    assert len(unified_keys("csv1")) == expected_rows - 3

    app.config["ETL_INJECT_FAILURE"] = ""
    resumed = run_etl("csv1")["csv1"]

    assert (resumed.status, resumed.inserted) == ("SUCCESS", 3)
    assert len(unified_keys("csv1")) == expected_rows
    assert db.session.get(Checkpoint, "csv1").cursor["offset"] > checkpoint_before["offset"]
    again = run_etl("csv1")["csv1"]
    assert (again.rows_read, again.inserted) == (0, 0)


def test_failure_after_some_batches_keeps_checkpoint_with_committed_rows(
    app, run_etl, table_counts
):
    app.config.update(ETL_BATCH_SIZE=4, ETL_INJECT_FAILURE="csv1:after_rows:9")

    failed = run_etl("csv1")["csv1"]

    assert failed.status == "FAILED"
    checkpoint = db.session.get(Checkpoint, "csv1")
    loaded = len(unified_keys("csv1"))
    assert loaded == 8 == failed.inserted
    assert table_counts()["raw_csv_records"] == 8  # the third batch left no raw row either
    assert checkpoint.cursor["line"] == 9  # header plus the eight committed rows

    app.config["ETL_INJECT_FAILURE"] = ""
    resumed = run_etl("csv1")["csv1"]
    assert (resumed.status, resumed.inserted) == ("SUCCESS", 6)
    assert len(unified_keys("csv1")) == 14


@pytest.mark.parametrize("failure", ["csv2:after_rows:1", "csv2:on_commit"])
def test_a_batch_that_fails_leaves_none_of_its_rows(app, run_etl, table_counts, failure):
    # Raw rows, unified rows, rejections and the checkpoint of a batch commit together.
    app.config["ETL_INJECT_FAILURE"] = failure

    failed = run_etl("csv2")["csv2"]

    assert failed.status == "FAILED"
    counts = table_counts()
    assert counts["raw_csv2_records"] == counts["unified_records"] == 0
    assert counts["rejected_records"] == counts["checkpoints"] == counts["csv_generations"] == 0
    app.config["ETL_INJECT_FAILURE"] = ""
    resumed = run_etl("csv2")["csv2"]
    assert (resumed.status, resumed.inserted, resumed.rejected) == ("PARTIAL", 12, 4)
    assert table_counts()["raw_csv2_records"] == 16


def test_missing_file_fails_the_run_with_a_clear_error(app, run_etl, csv_paths):
    csv_paths["CSV1_PATH"].unlink()

    run = run_etl("csv1")["csv1"]

    assert run.status == "FAILED"
    assert run.error.startswith("SourceError: cannot open ")
    assert "No such file or directory" in run.error
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EtlRun)) == 1


def test_a_header_missing_columns_rejects_its_rows_with_the_reason(run_etl, csv_paths):
    write(csv_paths["CSV1_PATH"], "id,label,value\nbitcoin,Bitcoin,1\n")

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.inserted, run.rejected) == ("PARTIAL", 0, 1)
    assert db.session.scalar(sa.select(RejectedRecord.reason)) == (
        "field 'name' is missing; closest is 'label' at 0.44; "
        "field 'timestamp' is missing; closest is 'label' at 0.14"
    )
    assert [event["kind"] for event in run.details["drift"]] == ["missing", "missing", "unexpected"]


def test_a_last_line_still_being_written_is_read_once_it_is_complete(run_etl, csv_paths):
    write(csv_paths["CSV1_PATH"], CSV1_HEADER + "ethereum,Ethereum,1.", mode="w")

    first = run_etl("csv1")["csv1"]
    write(csv_paths["CSV1_PATH"], "5,2025-12-27T10:46:21Z\n", mode="a")
    second = run_etl("csv1")["csv1"]

    assert (first.status, first.rows_read) == ("SUCCESS", 0)
    assert (second.status, second.rows_read, second.inserted, second.rejected) == (
        "SUCCESS",
        1,
        1,
        0,
    )
    assert [(key[0], str(key[3])) for key in unified_keys("csv1")] == [("ethereum", "1.5")]


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('bitcoin,"Bitcoin,1,2025-12-27T10:46:21Z\n', "malformed row: expected 4 fields, got 2"),
        ("bitcoin,Bit\rcoin,1,2025-12-27T10:46:21Z\n", "malformed row: not valid CSV"),
        ("bitcoin,Bitcoin,1,12/27/2025 25:00\n", "not a time of day: '12/27/2025 25:00'"),
        ("bitcoin,Bitcoin,1,0001-01-01T00:00:00+14:00\n", "timestamp out of range"),
    ],
    ids=["stray-quote", "bare-carriage-return", "hour-25", "date-overflow"],
)
def test_a_row_no_parser_can_read_is_rejected_and_never_blocks_the_file(
    run_etl, csv_paths, bad_line, reason
):
    good = "tether,Tether,0.9995,2025-12-27T10:46:21Z\n"
    write(csv_paths["CSV1_PATH"], CSV1_HEADER + bad_line + good + good.replace("tether", "usdt"))
    # At rest: an open quote at the end of the file is a stray one, not a record being written.
    settle(csv_paths["CSV1_PATH"])

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.inserted, run.rejected) == ("PARTIAL", 2, 1)
    assert reason in db.session.scalar(sa.select(RejectedRecord.reason))
    again = run_etl("csv1")["csv1"]
    assert (again.status, again.rows_read) == ("SUCCESS", 0)


def test_an_observation_restated_in_one_batch_keeps_the_later_value_and_counts_an_update(
    run_etl, csv_paths
):
    write(
        csv_paths["CSV1_PATH"],
        CSV1_HEADER
        + "bitcoin,Bitcoin,100,2025-12-27T10:46:21Z\n"
        + "bitcoin,Bitcoin,200,2025-12-27T10:46:21Z\n",
    )

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rows_read, run.inserted, run.updated, run.unchanged) == (
        "SUCCESS",
        2,
        1,
        1,
        0,
    )
    assert [str(key[3]) for key in unified_keys("csv1")] == ["200"]
