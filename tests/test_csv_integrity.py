"""CSV input that is replaced, edited, hostile or half-written: nothing lost, nothing blocked.

Every test runs on SQLite and PostgreSQL and expects the same outcome on both.
"""

import tracemalloc

import pytest
import sqlalchemy as sa

from kasparro.etl import pipeline
from kasparro.etl.left_over import fingerprint_checkpoint, load_left_over
from kasparro.extensions import db
from kasparro.models import Checkpoint, CsvGeneration, RawCsvRecord, UnifiedRecord
from tests.conftest import store_without_loading
from tests.csv_files import (
    CSV1_HEADER,
    loaded_values,
    rejections,
    settle,
    unified_keys,
    write,
)

TS = "2025-12-27T10:46:21Z"
GOOD = f"tether,Tether,0.9995,{TS}\n"
LATER = f"dogecoin,Dogecoin,0.1262,{TS}\n"


def rows(*lines: tuple[str, str]) -> str:
    """Return csv1 rows ``id,name,value,timestamp`` for (id, value) pairs."""
    return "".join(f"{coin},{coin.title()},{value},{TS}\n" for coin, value in lines)


# 1. File generations are unique and carry their own header.


@pytest.mark.parametrize(
    ("failure", "headers"),
    [
        # A batch that fails leaves nothing, not even its raw rows or its generation.
        ("csv1:before_load", ["value", "value"]),
        ("csv1:after_rows:3", ["value", "Value", "value"]),  # the first batch was committed
        ("csv1:on_commit", ["value", "value"]),
    ],
    ids=["before-any-batch", "after-one-batch", "at-commit"],
)
def test_a_file_replaced_twice_with_a_failure_in_between_ends_with_the_final_files_rows(
    app, run_etl, csv_paths, failure, headers
):
    path = csv_paths["CSV1_PATH"]
    app.config["ETL_BATCH_SIZE"] = 2
    write(path, CSV1_HEADER + rows(("bitcoin", 1), ("ethereum", 2)))
    assert run_etl("csv1")["csv1"].status == "SUCCESS"
    # Replaced by a file whose value column is re-cased: read with its own field map.
    write(
        path, "id,name,Value,timestamp\n" + rows(("bitcoin", 10), ("ethereum", 20), ("solana", 30))
    )
    app.config["ETL_INJECT_FAILURE"] = failure
    assert run_etl("csv1")["csv1"].status == "FAILED"
    app.config["ETL_INJECT_FAILURE"] = ""
    # Replaced again before the rows of the second file were all loaded: same line numbers.
    write(path, CSV1_HEADER + rows(("bitcoin", 100), ("ethereum", 200), ("solana", 300)))

    run = run_etl("csv1")["csv1"]

    assert run.status == "SUCCESS"
    assert loaded_values("csv1") == {"bitcoin": "100", "ethereum": "200", "solana": "300"}
    assert rejections("csv1") == []
    generations = db.session.scalars(
        sa.select(RawCsvRecord.generation).distinct().order_by(RawCsvRecord.generation)
    ).all()
    assert len(generations) == len(headers)
    known = dict(
        db.session.execute(
            sa.select(CsvGeneration.generation, CsvGeneration.header).where(
                CsvGeneration.source == "csv1"
            )
        ).all()
    )
    assert [known[g][2] for g in generations] == headers
    again = run_etl("csv1")["csv1"]
    assert (again.status, again.rows_read, again.inserted, again.updated) == ("SUCCESS", 0, 0, 0)


def test_rows_waiting_from_a_replaced_file_are_read_with_their_own_header(app, run_etl, csv_paths):
    path = csv_paths["CSV1_PATH"]
    write(path, "timestamp,value,id,name\n" + f"{TS},5,bitcoin,Bitcoin\n")
    store_without_loading("csv1", app.config)
    write(path, CSV1_HEADER + rows(("ethereum", 7)))

    left_over = load_left_over(db.session, "csv1", app.config)
    run = run_etl("csv1")["csv1"]

    assert (left_over.status, left_over.inserted, left_over.rejected) == ("SUCCESS", 1, 0)
    assert (run.status, run.rejected) == ("SUCCESS", 0)
    assert loaded_values("csv1") == {"bitcoin": "5", "ethereum": "7"}


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_rows_stored_but_not_loaded_are_loaded_once_before_anything_new(
    app, run_etl, csv_paths, batch_size
):
    path = csv_paths["CSV1_PATH"]
    write(path, CSV1_HEADER + rows(("bitcoin", 5), ("ethereum", 6)))
    store_without_loading("csv1", app.config)
    write(path, rows(("solana", 7)), mode="a")
    app.config["ETL_BATCH_SIZE"] = batch_size

    refused = run_etl("csv1")["csv1"]  # loading after them would move the checkpoint past them
    left_over = load_left_over(db.session, "csv1", app.config)
    run = run_etl("csv1")["csv1"]

    assert refused.status == "FAILED"
    assert refused.error == (
        "LeftOverRows: raw rows of csv1 stored by an earlier version wait to be loaded; "
        "load them first with `flask etl load-left-over`"
    )
    assert (left_over.status, left_over.rows_read, left_over.inserted) == ("SUCCESS", 0, 2)
    assert (run.status, run.rows_read, run.inserted) == ("SUCCESS", 1, 1)
    assert loaded_values("csv1") == {"bitcoin": "5", "ethereum": "6", "solana": "7"}
    checkpoint = db.session.get(Checkpoint, "csv1")
    newest = db.session.scalar(sa.select(sa.func.max(RawCsvRecord.id)))
    assert checkpoint.last_raw_id == newest
    assert load_left_over(db.session, "csv1", app.config) is None
    again = run_etl("csv1")["csv1"]
    assert (again.rows_read, again.inserted, again.updated) == (0, 0, 0)


# 2. An edit above the checkpoint is seen.


@pytest.mark.parametrize(
    ("old", "new", "appended"),
    [
        ("2922.48", "2922.49", ""),
        ("2922.48", "3000", ""),
        ("2922.48", "2922.47", "newcoin,Newcoin,1,2025-12-28T00:00:00Z\n"),
    ],
    ids=["same-length", "other-length", "with-an-append"],
)
def test_a_row_corrected_above_the_checkpoint_is_read_again_and_its_value_wins(
    run_etl, csv_paths, old, new, appended
):
    assert run_etl("csv1")["csv1"].status == "SUCCESS"
    path = csv_paths["CSV1_PATH"]
    edited = path.read_text().replace(f"ethereum,Ethereum,{old},", f"ethereum,Ethereum,{new},")
    write(path, edited + appended)

    run = run_etl("csv1")["csv1"]

    assert run.status == "SUCCESS"
    assert (run.inserted, run.updated, run.rejected) == (bool(appended), 1, 0)
    ethereum = {str(key[3]) for key in unified_keys("csv1") if key[0] == "ethereum"}
    assert ethereum == {new, "2931.07"}
    again = run_etl("csv1")["csv1"]
    assert (again.rows_read, again.inserted, again.updated) == (0, 0, 0)


def test_an_unchanged_file_is_not_read_again(run_etl, csv_paths):
    run_etl("csv1")
    checkpoint = dict(db.session.get(Checkpoint, "csv1").cursor)

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rows_read, run.unchanged) == ("SUCCESS", 0, 0)
    assert db.session.get(Checkpoint, "csv1").cursor == checkpoint


# 3 and 4. No single row can block a source, and bytes are not silently changed.

LONG_ID = "x" * 201
HOSTILE_ROWS = [
    (b"bitcoin,Bit\x00coin,1," + TS.encode() + b"\n", "contains a NUL byte at byte 11"),
    (b"bit\x00coin,Bitcoin,1," + TS.encode() + b"\n", "contains a NUL byte at byte 3"),
    (
        f"{LONG_ID},Long,1,{TS}\n".encode(),
        "external id is 201 characters long; the limit is 200",
    ),
    (f"bitcoin,{'B' * 300},1,{TS}\n".encode(), "name is 300 characters long; the limit is 200"),
    (
        b"bitcoin,Bitcoin,0." + b"0" * 20000 + b"1," + TS.encode() + b"\n",
        "amount has 20001 digits after the point; the limit is 40",
    ),
    (b"bitcoin,Bit\xffcoin,1," + TS.encode() + b"\n", "not valid utf-8: invalid start byte"),
    (b"bitcoin,Bit\xe2\x82coin,1," + TS.encode() + b"\n", "not valid utf-8: invalid continuation"),
    (b"bitcoin,\xc0\xafBitcoin,1," + TS.encode() + b"\n", "not valid utf-8: invalid start byte"),
]


@pytest.mark.parametrize(
    ("hostile", "reason"),
    HOSTILE_ROWS,
    ids=[
        "nul-in-name",
        "nul-in-id",
        "id-over-200",
        "name-over-300",
        "20000-decimals",
        "invalid-byte",
        "truncated-sequence",
        "overlong-encoding",
    ],
)
def test_a_hostile_row_at_the_end_of_a_batch_is_rejected_and_never_blocks_the_source(
    app, run_etl, csv_paths, hostile, reason
):
    app.config["ETL_BATCH_SIZE"] = 2
    path = csv_paths["CSV1_PATH"]
    write(path, (CSV1_HEADER + GOOD).encode() + hostile + rows(("solana", 3)).encode())

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("PARTIAL", 3, 2, 1)
    [(reference, why)] = rejections("csv1")
    assert reference == "line 3"
    assert reason in why
    assert loaded_values("csv1") == {"tether": "0.9995", "solana": "3"}
    names = db.session.scalars(sa.select(UnifiedRecord.name)).all()
    assert not any("\ufffd" in name for name in names)
    stored = db.session.scalar(sa.select(RawCsvRecord).where(RawCsvRecord.line_no == 3))
    kept = stored.raw_bytes if stored.raw_text is None else stored.raw_text.encode()
    assert kept == hostile.rstrip(b"\n")
    write(path, LATER, mode="a")
    later = run_etl("csv1")["csv1"]
    assert (later.status, later.rows_read, later.inserted, later.rejected) == ("SUCCESS", 1, 1, 0)


@pytest.mark.parametrize(
    ("encoding", "raw_name", "name"),
    [("latin-1", b"Bit\xffcoin", "Bit\xffcoin"), ("cp1252", b"Bit\x80coin", "Bit\u20accoin")],
)
def test_a_source_decodes_its_rows_with_the_encoding_it_declares(
    app, run_etl, csv_paths, encoding, raw_name, name
):
    app.config["CSV1_ENCODING"] = encoding
    row = b"bitcoin," + raw_name + b",1," + TS.encode() + b"\n"
    write(csv_paths["CSV1_PATH"], CSV1_HEADER.encode() + row)

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.inserted) == ("SUCCESS", 1)
    assert db.session.scalar(sa.select(UnifiedRecord.name)) == name


# 5. Memory stays bounded whatever the input.


@pytest.mark.parametrize("length", [5_000, 8_000_000], ids=["5-kB", "8-MB"])
def test_a_line_over_the_limit_is_rejected_without_being_read_whole(
    app, run_etl, csv_paths, length
):
    app.config["CSV_MAX_RECORD_BYTES"] = 1024
    path = csv_paths["CSV1_PATH"]
    write(path, CSV1_HEADER + GOOD)
    run_etl("csv1")  # warm: what the first run costs anyway is not the line's
    long_line = b"bitcoin,Bitcoin," + b"9" * length + b"," + TS.encode() + b"\n"
    write(path, long_line + LATER.encode(), mode="a")

    tracemalloc.start()
    run = run_etl("csv1")["csv1"]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("PARTIAL", 2, 1, 1)
    [(reference, why)] = rejections("csv1")
    assert reference == "line 3"
    assert why == (
        f"line of {len(long_line)} bytes is longer than CSV_MAX_RECORD_BYTES (1024); "
        "its first 1024 bytes are kept"
    )
    assert "dogecoin" in loaded_values("csv1")
    assert peak < 2_000_000
    stored = db.session.scalar(sa.select(RawCsvRecord).where(RawCsvRecord.line_no == 3))
    assert stored.raw_bytes == long_line[:1024]
    assert stored.end_offset - stored.start_offset == len(long_line)


# 6. A record still being written is never split.


OPEN_QUOTE = "a quoted field is still open at the end of the file"
NO_LINE_END = "the last line has no line ending yet"


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (b'bitcoin,"Bit\n', OPEN_QUOTE),
        (b'bitcoin,"Bit', OPEN_QUOTE),
        (b'bitcoin,"Bit\ncoin",1,2025', NO_LINE_END),
    ],
    ids=["after-a-line-break", "mid-line", "second-line-unterminated"],
)
def test_a_quoted_record_still_being_written_waits_and_then_loads_whole(
    run_etl, csv_paths, cut, reason
):
    record = b'bitcoin,"Bit\ncoin",1,' + TS.encode() + b"\n"
    path = csv_paths["CSV1_PATH"]
    write(path, (CSV1_HEADER + GOOD).encode() + cut)

    first = run_etl("csv1")["csv1"]
    write(path, record[len(cut) :], mode="a")
    second = run_etl("csv1")["csv1"]

    assert (first.status, first.rows_read, first.rejected) == ("SUCCESS", 1, 0)
    assert first.details["pending"] == {"line": 3, "bytes": len(cut), "reason": reason}
    assert (second.status, second.rows_read, second.inserted, second.rejected) == (
        "SUCCESS",
        1,
        1,
        0,
    )
    assert "pending" not in (second.details or {})
    names = db.session.scalars(sa.select(UnifiedRecord.name).order_by(UnifiedRecord.id)).all()
    assert names == ["Tether", "Bit\ncoin"]


@pytest.mark.parametrize(
    "tail",
    [b"dogecoin,Dogecoin,0.12", b"dogecoin,Dogecoin,0.1262," + TS.encode()],
    ids=["mid-value", "whole-row-without-line-end"],
)
def test_an_unterminated_last_line_waits_and_is_reported_on_the_run(run_etl, csv_paths, tail):
    path = csv_paths["CSV1_PATH"]
    write(path, (CSV1_HEADER + GOOD).encode() + tail)

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rows_read) == ("SUCCESS", 1)
    assert run.details["pending"] == {"line": 3, "bytes": len(tail), "reason": NO_LINE_END}
    assert loaded_values("csv1") == {"tether": "0.9995"}


@pytest.mark.parametrize(
    ("tail", "loaded", "rejected", "next_line"),
    [
        (b"dogecoin,Dogecoin,0.1262," + TS.encode(), {"dogecoin": "0.1262"}, [], 4),
        (b'bitcoin,"Bit\ncoin",1,' + TS.encode(), {"bitcoin": "1"}, [], 5),
        (
            b'bitcoin,"Bitcoin,1,' + TS.encode() + b"\n",
            {},
            [("line 3", "malformed row: expected 4 fields, got 2")],
            5,  # after the blank line 4
        ),
    ],
    ids=["unterminated-line", "unterminated-quoted-record", "stray-quote-at-the-end"],
)
def test_a_file_at_rest_past_the_settle_time_has_its_last_record_read_as_it_stands(
    run_etl, csv_paths, tail, loaded, rejected, next_line
):
    path = csv_paths["CSV1_PATH"]
    write(path, (CSV1_HEADER + GOOD).encode() + tail)
    settle(path)

    run = run_etl("csv1")["csv1"]

    assert "pending" not in (run.details or {})
    assert loaded_values("csv1") == {"tether": "0.9995", **loaded}
    assert rejections("csv1") == rejected
    # The producer carries on after a pause.
    write(path, f"\nnewcoin,Newcoin,1,{TS}\n".encode(), mode="a")
    later = run_etl("csv1")["csv1"]
    assert (later.rows_read, later.inserted, later.rejected) == (1, 1, 0)
    # The line ending written after the pause ends the line read as it stood: no line between.
    newest = db.session.scalar(sa.select(RawCsvRecord).order_by(RawCsvRecord.id.desc()).limit(1))
    assert newest.line_no == next_line


@pytest.mark.parametrize(
    ("tail", "rest"),
    [(f"dogecoin,Dogecoin,0.1262,{TS}", "\n"), ('bitcoin,"Bit\n', f'coin",1,{TS}\n')],
    ids=["unterminated-line", "open-quote"],
)
def test_a_file_at_rest_that_grows_during_the_read_keeps_its_new_tail_waiting(
    app, run_etl, csv_paths, monkeypatch, tail, rest
):
    path = csv_paths["CSV1_PATH"]
    write(path, CSV1_HEADER + GOOD + rows(("solana", 3)))
    settle(path)
    app.config["ETL_BATCH_SIZE"] = 1
    insert_raw = pipeline.insert_raw

    def producer_writes_meanwhile(*args, **kwargs):
        if not producer_writes_meanwhile.done:  # during the first batch of a read at rest
            producer_writes_meanwhile.done = True
            write(path, tail, mode="a")
        return insert_raw(*args, **kwargs)

    producer_writes_meanwhile.done = False
    monkeypatch.setattr(pipeline, "insert_raw", producer_writes_meanwhile)
    first = run_etl("csv1")["csv1"]
    monkeypatch.undo()
    write(path, rest, mode="a")
    second = run_etl("csv1")["csv1"]

    assert (first.rows_read, first.rejected, first.details["pending"]["line"]) == (2, 0, 4)
    assert (second.rows_read, second.inserted, second.rejected) == (1, 1, 0)
    assert rejections("csv1") == []


@pytest.mark.parametrize(
    "quoted",
    ['Coin 5" A', 'Coin 5" A"'],
    ids=["one-inch-mark", "two-marks"],
)
def test_a_quote_inside_an_unquoted_field_is_an_ordinary_character(run_etl, csv_paths, quoted):
    path = csv_paths["CSV1_PATH"]
    body = f'a,{quoted},1,{TS}\nb,Coin B,2,{TS}\nc,Coin 7" C,3,{TS}\n'
    write(path, CSV1_HEADER + body + "".join(f"x{i},X,{i},{TS}\n" for i in range(30)))

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rows_read, run.rejected) == ("SUCCESS", 33, 0)
    assert "pending" not in (run.details or {})
    names = dict(db.session.execute(sa.select(UnifiedRecord.external_id, UnifiedRecord.name)).all())
    assert (names["a"], names["c"]) == (quoted, 'Coin 7" C')


@pytest.mark.parametrize(
    ("raw_name", "reason"),
    [
        (b"Bit\\u0000coin", "the row contains a NUL character at character 11"),
        (b"Bit\\ud800coin", "the row is not valid text: a lone surrogate at character 11"),
    ],
    ids=["escaped-nul", "escaped-surrogate"],
)
def test_text_an_encoding_decodes_to_that_no_database_holds_is_rejected(
    app, run_etl, csv_paths, raw_name, reason
):
    app.config["CSV1_ENCODING"] = "raw_unicode_escape"
    row = b"bitcoin," + raw_name + b",1," + TS.encode() + b"\n"
    write(csv_paths["CSV1_PATH"], (CSV1_HEADER + GOOD).encode() + row)

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.inserted, run.rejected) == ("PARTIAL", 1, 1)
    assert rejections("csv1") == [("line 3", f"decoded as raw-unicode-escape, {reason}")]


def test_a_feed_declared_utf_8_sig_is_read_as_utf_8(app, run_etl, csv_paths):
    app.config["CSV2_ENCODING"] = "utf-8-sig"

    run = run_etl("csv2")["csv2"]

    assert (run.status, run.inserted) == ("PARTIAL", 12)


@pytest.mark.parametrize(("source", "path_setting"), [("csv1", "CSV1_PATH"), ("csv2", "CSV2_PATH")])
@pytest.mark.parametrize("file_kept", [True, False])
def test_a_checkpoint_from_before_fingerprints_gets_its_fingerprint_once(
    app, run_etl, csv_paths, source, path_setting, file_kept
):
    run_etl(source)
    checkpoint = db.session.get(Checkpoint, source)
    fingerprinted = dict(checkpoint.cursor)
    # As a version before fingerprints wrote it.
    checkpoint.cursor = {key: value for key, value in fingerprinted.items() if key != "fingerprint"}
    db.session.commit()
    if not file_kept:
        write(csv_paths[path_setting], CSV1_HEADER)  # the file was replaced since

    added = fingerprint_checkpoint(db.session, source, app.config)

    assert added is file_kept
    cursor = db.session.get(Checkpoint, source).cursor
    assert ("fingerprint" in cursor) is file_kept
    if file_kept:
        assert cursor == fingerprinted
        assert fingerprint_checkpoint(db.session, source, app.config) is False
        again = run_etl(source)[source]
        assert (again.status, again.rows_read, again.inserted) == ("SUCCESS", 0, 0)
