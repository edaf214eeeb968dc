"""A rejection is about a line's content: a file read again does not count its bad lines twice.

A file edited above its checkpoint, or replaced, is read again from its top as a new generation.
Its bad lines are the ones already rejected, unless their content changed: ``rejected_records``,
the count ``/stats`` serves and the count the database keeps stay as they were. Identical bad
lines of one file are still one rejection each.
"""

import pytest
import sqlalchemy as sa

from kasparro.extensions import db
from kasparro.models import RejectedCount, RejectedRecord
from tests.csv_files import CSV1_HEADER, write

GOOD = [
    "bitcoin,Bitcoin,87387.00,2025-12-27T10:46:21Z\n",
    "ethereum,Ethereum,2922.48,2025-12-27T10:46:21Z\n",
    "tether,Tether,0.9995,2025-12-27T10:46:21Z\n",
]
BAD = [
    "solana,Solana,12x.5,2025-12-27T10:46:21Z\n",
    "cardano,Cardano,N/A,2025-12-27T10:46:21Z\n",
    "ripple,XRP,1.86,03/04/2025\n",
    "dogecoin,Dogecoin,0.12,2025-12-27T10:46:21Z,extra\n",
]


def rejected(client, source: str = "csv1") -> tuple[int, int, int]:
    """Return a source's rejections: rows stored, the kept count, and what /stats says."""
    stored = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(RejectedRecord)
        .where(RejectedRecord.source == source)
    )
    kept = db.session.scalar(sa.select(RejectedCount.records).where(RejectedCount.source == source))
    response = client.get("/stats")
    assert response.status_code == 200
    return stored, kept or 0, response.get_json()["sources"][source]["rejected_records"]


def reasons(source: str = "csv1") -> list[tuple[str, str]]:
    """Return (reference, reason) of a source's rejections, oldest first."""
    rows = db.session.execute(
        sa.select(RejectedRecord.reference, RejectedRecord.reason)
        .where(RejectedRecord.source == source)
        .order_by(RejectedRecord.id)
    )
    return rows.tuples().all()


def test_a_file_read_again_after_an_edit_elsewhere_keeps_its_bad_lines_once(
    client, run_etl, csv_paths
):
    path = csv_paths["CSV1_PATH"]
    write(path, CSV1_HEADER + "".join(GOOD[:2] + BAD + GOOD[2:]))
    first = run_etl("csv1")["csv1"]
    assert (first.status, first.inserted, first.rejected) == ("PARTIAL", 3, 4)
    assert rejected(client) == (4, 4, 4)
    before = reasons()

    # An edit above the checkpoint, in a good line: the whole file is read again.
    write(path, CSV1_HEADER + "".join([GOOD[0].replace("87387.00", "87400")] + GOOD[1:2] + BAD))
    again = run_etl("csv1")["csv1"]

    # The run still saw its bad lines (and is PARTIAL for them); none is recorded twice.
    assert (again.status, again.rows_read, again.updated, again.unchanged, again.rejected) == (
        "PARTIAL",
        6,
        1,
        1,
        4,
    )
    assert rejected(client) == (4, 4, 4)
    assert reasons() == before

    # A third reading, the bad lines moved to the top: the same contents, still known.
    write(path, CSV1_HEADER + "".join(BAD + GOOD))
    run_etl("csv1")
    assert rejected(client) == (4, 4, 4)


def test_a_bad_line_whose_content_changed_is_a_new_rejection(client, run_etl, csv_paths):
    path = csv_paths["CSV1_PATH"]
    write(path, CSV1_HEADER + "".join(GOOD + BAD))
    run_etl("csv1")
    assert rejected(client) == (4, 4, 4)

    changed = BAD[0].replace("12x.5", "12y.5")
    write(path, CSV1_HEADER + "".join(GOOD + [changed] + BAD[1:]))
    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rejected) == ("PARTIAL", 4)
    assert rejected(client) == (5, 5, 5)
    assert reasons()[-1] == ("line 5", "not a number: '12y.5'")


def test_identical_bad_lines_of_one_file_count_once_each_and_only_once(client, run_etl, csv_paths):
    path = csv_paths["CSV1_PATH"]
    # Three copies of one bad line, two of one good line: the later copies are duplicates.
    write(path, CSV1_HEADER + "".join([BAD[0], GOOD[0], BAD[0], GOOD[0], BAD[0]]))
    first = run_etl("csv1")["csv1"]
    assert (first.inserted, first.rejected) == (1, 4)
    assert reasons() == [
        ("line 2", "not a number: '12x.5'"),
        ("line 4", "duplicate of line 2"),
        ("line 5", "duplicate of line 3"),
        ("line 6", "duplicate of line 2"),
    ]
    assert rejected(client) == (4, 4, 4)

    # Read again with one copy fewer: every copy left is one already known.
    write(path, CSV1_HEADER + "".join([GOOD[1], BAD[0], GOOD[0], BAD[0], GOOD[0]]))
    run_etl("csv1")
    assert rejected(client) == (4, 4, 4)

    # Read again with a fourth copy: that one is new.
    write(path, CSV1_HEADER + "".join([BAD[0]] * 4 + [GOOD[0]]))
    run = run_etl("csv1")["csv1"]
    assert run.rejected == 4
    assert rejected(client) == (5, 5, 5)
    assert reasons()[-1] == ("line 5", "duplicate of line 2")


@pytest.mark.parametrize("batch_size", [1, 3])
def test_known_bad_lines_are_known_whatever_batch_they_fall_in(
    app, client, run_etl, csv_paths, batch_size
):
    app.config["ETL_BATCH_SIZE"] = batch_size
    path = csv_paths["CSV1_PATH"]
    write(path, CSV1_HEADER + "".join([BAD[1], BAD[1], GOOD[0], BAD[2], BAD[1]]))
    run_etl("csv1")
    assert rejected(client) == (4, 4, 4)

    write(path, CSV1_HEADER + "".join([GOOD[1], BAD[1], BAD[2], BAD[1], GOOD[0], BAD[1]]))
    run = run_etl("csv1")["csv1"]

    assert (run.status, run.inserted, run.rejected) == ("PARTIAL", 1, 4)
    assert rejected(client) == (4, 4, 4)


def test_the_bundled_quirky_file_read_again_keeps_its_four_rejections(client, run_etl, csv_paths):
    path = csv_paths["CSV2_PATH"]
    run_etl("csv2")
    assert rejected(client, "csv2") == (4, 4, 4)
    with open(path, encoding="utf-8-sig") as feed:
        lines = feed.read().splitlines(keepends=True)
    # An edit in the first data line, far above the bad ones.
    lines[1] = lines[1].replace("mc-0001", "mc-0001a")
    write(path, "".join(lines))

    run = run_etl("csv2")["csv2"]

    assert (run.status, run.inserted, run.rejected) == ("PARTIAL", 1, 4)
    assert rejected(client, "csv2") == (4, 4, 4)
