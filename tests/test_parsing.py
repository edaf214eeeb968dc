"""Numbers and dates as feeds write them: parsed exactly, or rejected with a reason."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from kasparro.etl.parsing import InvalidValue, parse_amount, parse_timestamp
from kasparro.etl.sources.csv_markets import split_full_name
from kasparro.extensions import db
from tests.csv_files import CSV1_HEADER, write


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("87387.12", "87387.12"),
        ("1,234.5", "1234.5"),
        ("$1.7T", "1700000000000"),
        ("4800 USD", "4800"),
        ("68.2B USD", "68200000000"),
        ("19.1b", "19100000000"),
        ("US$ 12", "12"),
        (" 0.000000012345 ", "0.000000012345"),
        ("1e3", "1000"),
        (87387, "87387"),
        (0.999512, "0.999512"),
        (2922.48, "2922.48"),
        ("0", "0"),
        ("123456789012345678901234567.1234567", "123456789012345678901234567.1234567"),
        ("0." + "1" * 40, "0." + "1" * 40),
        ("1.000000000000000000000000000001K", "1000.000000000000000000000000001"),
    ],
)
def test_amounts_parse_exactly(raw, expected):
    assert parse_amount(raw) == Decimal(expected)
    assert format(parse_amount(raw), "f") == expected


@pytest.mark.parametrize(
    ("notations", "canonical"),
    [
        (("1.7T", "1700000000000.00", "1.70e12", "$1,700,000,000,000.0 USD"), "1700000000000"),
        (("100", "100.0", "100.", "1e2", "0.1K", "0100"), "100"),
        (("1e3", "1000", "1000.000", "1.000E+3", 1000, 1000.0), "1000"),
        (("0.10", "0.1", ".1", "1e-1", "0.100000"), "0.1"),
        (("0", "0.00", "-0", "-0.0", "0e5", 0, 0.0), "0"),
        (("0.0000001", "1E-7", "0.00000010"), "0.0000001"),
        (("12.5000", "1.25e1"), "12.5"),
    ],
)
def test_every_notation_of_a_number_parses_to_one_canonical_text(notations, canonical):
    for raw in notations:
        value = parse_amount(raw)
        # One text: no exponent, no trailing zero after the point, no trailing point, no -0;
        # and one Decimal, so that both engines store and compare the same thing.
        assert format(value, "f") == canonical, raw
        assert value.as_tuple() == Decimal(canonical).as_tuple(), raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "missing value"),
        ("", "missing value"),
        ("N/A", "not a number: 'N/A'"),
        ("12x.5", "not a number: '12x.5'"),
        ("1,23,4", "not a number: '1,23,4'"),
        ("-5", "negative amount: '-5'"),
        ("NaN", "not a number: 'NaN'"),
        (float("inf"), "not a finite number: inf"),
        (True, "not a number: True"),
        ([1], "not a number: list"),
        ("1e40", "amount out of range: '1e40'"),
        ("0." + "1" * 41, "amount has 41 digits after the point; the limit is 40"),
        ("0." + "0" * 38 + "1234", "amount has 42 digits after the point; the limit is 40"),
    ],
)
def test_bad_amounts_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(InvalidValue) as error:
        parse_amount(raw)
    assert str(error.value) == reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-12-27T10:46:21.358Z", datetime(2025, 12, 27, 10, 46, 21, 358000, tzinfo=UTC)),
        ("2025-12-27T11:46:21+01:00", datetime(2025, 12, 27, 10, 46, 21, tzinfo=UTC)),
        ("2025-12-27 10:46", datetime(2025, 12, 27, 10, 46, tzinfo=UTC)),
        ("2025-12-27", datetime(2025, 12, 27, tzinfo=UTC)),
        ("12/27/2025", datetime(2025, 12, 27, tzinfo=UTC)),
        ("27/12/2025 09:30", datetime(2025, 12, 27, 9, 30, tzinfo=UTC)),
        ("04/04/2025", datetime(2025, 4, 4, tzinfo=UTC)),
        ("Dec 27, 2025", datetime(2025, 12, 27, tzinfo=UTC)),
        ("27 Dec 2025", datetime(2025, 12, 27, tzinfo=UTC)),
        ("1766832381", datetime(2025, 12, 27, 10, 46, 21, tzinfo=UTC)),
        ("1766832381000", datetime(2025, 12, 27, 10, 46, 21, tzinfo=UTC)),
    ],
)
def test_timestamps_parse_to_utc(raw, expected):
    assert parse_timestamp(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "missing timestamp"),
        ("  ", "missing timestamp"),
        ("03/04/2025", "ambiguous date, day and month could be swapped: '03/04/2025'"),
        ("13/13/2025", "not a calendar date: '13/13/2025'"),
        ("yesterday", "unrecognised timestamp: 'yesterday'"),
        ("1999-01-01", "timestamp out of range: '1999-01-01'"),
        ({"a": 1}, "not a timestamp: dict"),
        (
            "2025-12-27T10:46:21+00:00\x00junk",
            "unrecognised timestamp: '2025-12-27T10:46:21+00:00\\x00junk'",
        ),
        ("2025-12-27T10:46:21Z\x00", "unrecognised timestamp: '2025-12-27T10:46:21Z\\x00'"),
    ],
)
def test_bad_timestamps_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(InvalidValue) as error:
        parse_timestamp(raw)
    assert str(error.value) == reason


@pytest.mark.parametrize(
    ("full_name", "expected"),
    [
        ("Bitcoin (BTC)", ("Bitcoin", "BTC")),
        ("Wrapped Bitcoin (wbtc)", ("Wrapped Bitcoin", "WBTC")),
        ("Sui", ("Sui", None)),
        ("", (None, None)),
    ],
)
def test_full_names_split_into_name_and_symbol(full_name, expected):
    assert split_full_name(full_name) == expected


# A re-read file restates each value: the first run's notation, then another.
RESTATED = [
    ("bitcoin", "1700000000000.00", "1.7T", "1700000000000"),
    ("ethereum", "100.0", "100", "100"),
    ("solana", "1e3", "1000", "1000"),
    ("tether", "0.10", "0.1", "0.1"),
    ("dogecoin", "0.0000001", "1E-7", "0.0000001"),
]


def csv1_file(column: int) -> str:
    """Return a csv1 file stating each RESTATED value in notation ``column`` (1 or 2)."""
    return CSV1_HEADER + "".join(
        f"{row[0]},{row[0].title()},{row[column]},2025-12-27T10:46:21Z\n" for row in RESTATED
    )


@pytest.mark.parametrize("first", [1, 2], ids=["plain-then-short", "short-then-plain"])
def test_a_value_restated_in_another_notation_is_unchanged_and_served_as_one_text(
    client, run_etl, csv_paths, first
):
    write(csv_paths["CSV1_PATH"], csv1_file(first))
    assert run_etl("csv1")["csv1"].inserted == len(RESTATED)
    served = {row["external_id"]: row["value"] for row in client.get("/data").get_json()["data"]}
    # A rewritten file is read again as a new generation, each value in the other notation.
    write(csv_paths["CSV1_PATH"], csv1_file(3 - first))

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rows_read, run.inserted, run.updated, run.unchanged) == (
        "SUCCESS",
        len(RESTATED),
        0,
        0,
        len(RESTATED),
    )
    canonical = {row[0]: row[3] for row in RESTATED}
    assert served == canonical
    assert {row["external_id"]: row["value"] for row in client.get("/data").get_json()["data"]} == (
        canonical
    )
    assert stored_texts() == canonical


def stored_texts() -> dict[str, str]:
    """Return each csv1 observation's value as the database itself writes it as text."""
    rows = db.session.execute(
        sa.text(
            "SELECT external_id, CAST(value AS TEXT) FROM unified_records WHERE source = 'csv1'"
        )
    )
    return dict(rows.tuples().all())
