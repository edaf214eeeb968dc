"""CoinGecko answers that are hostile or oversized: a bad coin is rejected, never a blocker.

Every test runs on SQLite and PostgreSQL and expects the same outcome on both.
"""

import json

import pytest
import sqlalchemy as sa

from kasparro.extensions import db
from kasparro.models import Asset, RejectedRecord, UnifiedRecord
from tests.coingecko_imitation import Fault

SOURCE = "coingecko_api"
HOSTILE_FIELDS = [
    ({"id": "bit\x00coin"}, "external id contains a NUL character at character 3"),
    ({"id": "x" * 201}, "external id is 201 characters long; the limit is 200"),
    ({"name": "Ether\x00eum"}, "name contains a NUL character at character 5"),
    ({"name": "N" * 201}, "name is 201 characters long; the limit is 200"),
    ({"symbol": "s" * 51}, "symbol is 51 characters long; the limit is 50"),
    ({"name": "Ether\ud800eum"}, "name is not valid text: a lone surrogate at character 5"),
    ({"last_updated": "2025-12-27T10:46:21.358Z\x00"}, "unrecognised timestamp"),
    ({"last_updated": "9" * 100}, "unrecognised timestamp"),
]


@pytest.mark.parametrize(
    ("fields", "reason"),
    HOSTILE_FIELDS,
    ids=[
        "nul-in-id",
        "id-over-200",
        "nul-in-name",
        "name-over-200",
        "symbol-over-50",
        "lone-surrogate",
        "nul-in-last-updated",
        "last-updated-over-64",
    ],
)
def test_a_hostile_coin_is_rejected_and_never_blocks_the_source(
    app, coingecko, run_etl, fields, reason
):
    coingecko.coins[1].update(fields)  # ethereum

    first = run_etl(SOURCE)[SOURCE]

    assert (first.status, first.rows_read, first.inserted, first.rejected) == ("PARTIAL", 5, 12, 1)
    assert reason in db.session.scalar(sa.select(RejectedRecord.reason))
    loaded = db.session.scalars(sa.select(UnifiedRecord.external_id).distinct()).all()
    assert sorted(loaded) == ["bitcoin", "ripple", "solana", "tether"]
    vouched = db.session.scalars(sa.select(Asset.id).where(Asset.origin == "coingecko_api")).all()
    assert sorted(vouched) == ["bitcoin", "ripple", "solana", "tether"]  # not the rejected coin
    coingecko.move_price("bitcoin", 90000.5)
    second = run_etl(SOURCE)[SOURCE]
    assert (second.status, second.inserted, second.rejected) == ("SUCCESS", 3, 0)


@pytest.mark.parametrize(
    ("raw_name", "at"), [(b"Ether\xffeum", 5), (b"\xe2\x82Ethereum", 0)], ids=["0xff", "cut-short"]
)
def test_a_coin_whose_bytes_are_not_utf8_is_rejected_and_the_page_loads(
    app, coingecko, run_etl, raw_name, at
):
    page = json.dumps(coingecko.coins).encode().replace(b'"Ethereum"', b'"' + raw_name + b'"')
    coingecko.fail_next(Fault(body=page))

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.inserted, run.rejected) == ("PARTIAL", 12, 1)
    reason = db.session.scalar(sa.select(RejectedRecord.reason))
    assert reason == f"name is not valid text: a lone surrogate at character {at}"


@pytest.mark.parametrize("limit", [1_000, 50_000])
def test_a_page_larger_than_the_limit_fails_the_run_without_being_read_whole(
    app, coingecko, run_etl, limit
):
    app.config["API_MAX_PAGE_BYTES"] = limit
    coingecko.coins[0]["name"] = "B" * (limit * 2)

    run = run_etl(SOURCE)[SOURCE]

    assert run.status == "FAILED"
    assert run.error.endswith(f"page 1 is larger than API_MAX_PAGE_BYTES ({limit} bytes)")
    assert len(coingecko.page_requests()) == 1  # not worth retrying
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UnifiedRecord)) == 0


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        (b"1e999", "amount out of range: '1e999'"),
        (b"NaN", "not a number: 'NaN'"),
        (b"-Infinity", "not a number: '-Infinity'"),
        (b"1" * 5000, "amount out of range: '" + "1" * 60 + "\u2026'"),
    ],
    ids=["1e999", "NaN", "-Infinity", "5000-digits"],
)
def test_a_number_no_store_can_hold_rejects_its_coin_or_rides_along_unread(
    app, coingecko, run_etl, number, reason
):
    coins = json.dumps(coingecko.coins).encode()
    # Ethereum's price is the number; Tether carries it in a field nobody reads.
    page = coins.replace(b'"current_price": 2922.48', b'"current_price": ' + number)
    page = page.replace(b'"high_24h": 0.999512', b'"high_24h": ' + number)
    coingecko.fail_next(Fault(body=page))

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.inserted, run.rejected) == ("PARTIAL", 12, 1)
    assert db.session.scalar(sa.select(RejectedRecord.reason)) == reason
    assert (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(UnifiedRecord)
            .where(UnifiedRecord.external_id == "tether")
        )
        == 3
    )


@pytest.mark.parametrize("symbol", ["\u0130" * 50, "\u0130" * 26], ids=["50", "26"])
def test_a_symbol_that_grows_when_lower_cased_vouches_for_no_asset(app, coingecko, run_etl, symbol):
    coingecko.coins[1]["symbol"] = symbol  # ethereum; upper case fits, lower case does not

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.inserted) == ("SUCCESS", 15)
    vouched = db.session.scalars(sa.select(Asset.id).where(Asset.origin == "coingecko_api")).all()
    assert sorted(vouched) == ["bitcoin", "ripple", "solana", "tether"]
    assert max(len(s) for s in db.session.scalars(sa.select(Asset.symbol))) <= 50
