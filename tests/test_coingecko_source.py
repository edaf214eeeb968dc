"""The CoinGecko source against the loopback imitation: paging, incremental writes, the key."""

import json
import logging

import pytest
import sqlalchemy as sa

from kasparro.etl.sources.coingecko import key_header_for
from kasparro.extensions import db
from kasparro.models import Checkpoint, RawApiRecord, UnifiedRecord
from tests.coingecko_imitation import make_coins
from tests.conftest import TEST_API_KEY


def count(model, *where) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def test_more_than_one_page_is_read_and_a_short_page_ends_paging(app, coingecko, run_etl):
    coingecko.coins = make_coins(260)

    run = run_etl("coingecko_api")["coingecko_api"]

    assert (run.status, run.rows_read, run.inserted) == ("SUCCESS", 260, 780)
    pages = [(r.query["page"], r.query["per_page"]) for r in coingecko.page_requests()]
    assert pages == [("1", "250"), ("2", "250")]
    assert coingecko.page_requests()[0].query == {
        "vs_currency": "usd",
        "order": "market_cap_desc",
        "per_page": "250",
        "page": "1",
        "sparkline": "false",
    }


def test_paging_stops_at_the_configured_page_count(app, coingecko, run_etl):
    coingecko.coins = make_coins(12)
    app.config.update(API_PER_PAGE=5, API_MAX_PAGES=2)

    run = run_etl("coingecko_api")["coingecko_api"]

    assert run.rows_read == 10
    assert [r.query["page"] for r in coingecko.page_requests()] == ["1", "2"]


def test_unmoved_coins_are_not_written_again_and_moved_ones_add_observations(
    app, coingecko, run_etl, table_counts
):
    run_etl("coingecko_api")
    before = table_counts()

    unchanged = run_etl("coingecko_api")["coingecko_api"]

    assert (unchanged.rows_read, unchanged.inserted, unchanged.unchanged) == (5, 0, 5)
    assert table_counts() == {**before, "etl_runs": before["etl_runs"] + 1}

    coingecko.move_price("bitcoin", 88000.5)
    moved = run_etl("coingecko_api")["coingecko_api"]

    assert (moved.inserted, moved.unchanged) == (3, 4)
    prices = db.session.scalars(
        sa.select(UnifiedRecord.value)
        .where(UnifiedRecord.external_id == "bitcoin", UnifiedRecord.metric == "price_usd")
        .order_by(UnifiedRecord.timestamp)
    ).all()
    assert [str(p) for p in prices] == ["87387", "88000.5"]
    assert count(RawApiRecord) == 6
    checkpoint = db.session.get(Checkpoint, "coingecko_api")
    assert checkpoint.cursor["last_updated"] == "2025-12-27T10:47:21.358Z"


def test_values_are_exact_decimals(app, coingecko, run_etl):
    coingecko.coins[2]["current_price"] = 0.999512
    coingecko.coins[2]["market_cap"] = 186786011203

    run_etl("coingecko_api")

    values = dict(
        db.session.execute(
            sa.select(UnifiedRecord.metric, UnifiedRecord.value).where(
                UnifiedRecord.external_id == "tether"
            )
        ).all()
    )
    assert str(values["price_usd"]) == "0.999512"
    assert str(values["market_cap_usd"]) == "186786011203"


def test_nulls_anywhere_are_tolerated(app, coingecko, run_etl):
    coingecko.coins[0].update(current_price=None, name=None, symbol=None)
    coingecko.coins[1].update(current_price=None, market_cap=None, total_volume=None)
    del coingecko.coins[2]["total_volume"]
    coingecko.coins[3]["last_updated"] = None
    coingecko.coins[4]["id"] = None

    run = run_etl("coingecko_api")["coingecko_api"]

    assert run.status == "PARTIAL"
    assert (run.rows_read, run.inserted, run.rejected) == (5, 4, 3)
    metrics = db.session.execute(
        sa.select(UnifiedRecord.external_id, UnifiedRecord.metric).order_by(
            UnifiedRecord.external_id, UnifiedRecord.metric
        )
    ).all()
    assert [tuple(m) for m in metrics] == [
        ("bitcoin", "market_cap_usd"),
        ("bitcoin", "volume_24h_usd"),
        ("tether", "market_cap_usd"),
        ("tether", "price_usd"),
    ]


def test_the_key_is_sent_only_in_the_header_and_never_logged(app, coingecko, run_etl, capfd):
    logging.getLogger().setLevel(logging.DEBUG)  # urllib3 logs every URL it requests at DEBUG
    coingecko.coins = []  # an empty answer, so paging ends at once
    run_etl("coingecko_api")
    coingecko.coins = make_coins(3)
    app.config["API_SOURCE_URL"] = coingecko.url + "/missing"  # force an error path too
    failed = run_etl("coingecko_api")["coingecko_api"]
    app.config["API_SOURCE_URL"] = coingecko.url
    run_etl("coingecko_api")

    assert failed.status == "FAILED"
    for request in coingecko.requests:
        assert request.headers["x-cg-demo-api-key"] == TEST_API_KEY
        assert TEST_API_KEY not in json.dumps(request.query)
        assert "pro" not in " ".join(request.headers)
    captured = capfd.readouterr()
    logged = captured.out + captured.err
    assert "etl.run.finished" in logged  # the logs were captured, and they are clean
    assert "/api/v3/coins/markets?vs_currency=usd" in logged
    assert TEST_API_KEY not in logged
    assert TEST_API_KEY not in (failed.error or "")


def test_no_key_header_is_sent_without_a_key(app, coingecko, run_etl):
    app.config["API_KEY"] = ""

    run_etl("coingecko_api")

    assert all("x-cg-demo-api-key" not in r.headers for r in coingecko.requests)


@pytest.mark.parametrize(
    ("url", "header"),
    [
        ("https://api.coingecko.com/api/v3/coins/markets", "x-cg-demo-api-key"),
        ("https://pro-api.coingecko.com/api/v3/coins/markets", "x-cg-pro-api-key"),
    ],
)
def test_the_key_header_follows_the_host(url, header):
    assert key_header_for(url) == header


def test_unreachable_api_fails_the_run_with_a_clear_message(app, run_etl):
    app.config["API_SOURCE_URL"] = "http://127.0.0.1:9/api/v3/coins/markets"

    run = run_etl("coingecko_api")["coingecko_api"]

    assert run.status == "FAILED"
    assert run.error.startswith("SourceError: 127.0.0.1:9 page 1: gave up after 5 attempts in ")
    assert run.error.endswith(": cannot connect (ConnectionError)")
    assert run.finished_at is not None
