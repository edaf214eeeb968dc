"""Canonical asset identity across sources: names first, then symbols only when unambiguous."""

import pytest
import sqlalchemy as sa

from kasparro.etl.assets import AssetResolver
from kasparro.etl.sources.base import Observation
from kasparro.extensions import db
from kasparro.models import Asset, UnifiedRecord
from tests.coingecko_imitation import make_coin


def test_bitcoin_from_all_three_sources_shares_one_asset_id(client, run_etl):
    runs = run_etl("coingecko_api", "csv1", "csv2")
    assert {run.status for run in runs.values()} <= {"SUCCESS", "PARTIAL"}

    sources = db.session.scalars(
        sa.select(UnifiedRecord.source).where(UnifiedRecord.asset_id == "bitcoin").distinct()
    ).all()
    assert sorted(sources) == ["coingecko_api", "csv1", "csv2"]

    body = client.get("/data?asset=bitcoin&page_size=100").get_json()
    assert {item["source"] for item in body["data"]} == {"coingecko_api", "csv1", "csv2"}
    assert {item["asset_id"] for item in body["data"]} == {"bitcoin"}
    assert body["pagination"]["total"] == len(body["data"]) == 3 + 2 + 1


def test_two_coins_on_one_ticker_stay_different_and_a_bare_ticker_stays_unresolved(
    app, coingecko, csv_paths, run_etl
):
    coingecko.coins = [
        make_coin("uniswap", "uni", "Uniswap", 6.1, 3_800_000_000, 1, 1),
        make_coin("universe-token", "uni", "Universe", 0.01, 1_000_000, 1, 2),
    ]
    with open(csv_paths["CSV2_PATH"], "a", encoding="utf-8") as feed:
        feed.write("u-1,Uniswap (UNI),3.8B,2025-12-27\n")
        feed.write("u-2,Universe (UNI),1M,2025-12-27\n")
        feed.write("u-3,Some Other Name (UNI),5M,2025-12-27\n")

    run_etl("coingecko_api")
    csv2 = run_etl("csv2")["csv2"]

    resolved = dict(
        db.session.execute(
            sa.select(UnifiedRecord.external_id, UnifiedRecord.asset_id).where(
                UnifiedRecord.external_id.in_(("u-1", "u-2", "u-3"))
            )
        ).all()
    )
    assert resolved == {"u-1": "uniswap", "u-2": "universe-token", "u-3": None}
    assert csv2.unresolved == 1


def test_coingecko_fills_the_assets_table_and_the_seed_works_offline(app, run_etl):
    app.config["API_SOURCE_URL"] = "http://127.0.0.1:9/api/v3/coins/markets"
    runs = run_etl("coingecko_api", "csv2")

    assert runs["coingecko_api"].status == "FAILED"
    assert runs["csv2"].unresolved == 0  # the bundled seed knows every coin in the feed
    assert db.session.get(Asset, "bitcoin").origin == "seed"


def test_coingecko_data_refreshes_seed_assets(app, run_etl):
    run_etl("csv1", "coingecko_api")

    bitcoin = db.session.get(Asset, "bitcoin")
    assert (bitcoin.origin, bitcoin.symbol, bitcoin.name) == ("coingecko", "btc", "Bitcoin")


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        ({"asset_hint": "bitcoin"}, "bitcoin"),
        ({"name": "Bitcoin"}, "bitcoin"),
        ({"name": "  bitcoin "}, "bitcoin"),
        ({"symbol": "BTC"}, "bitcoin"),
        ({"name": "Unknown", "symbol": "BTC"}, "bitcoin"),
        ({"symbol": "UNI"}, None),
        ({"name": "Uniswap", "symbol": "UNI"}, "uniswap"),
        ({"name": "Wrapped", "symbol": "WX"}, "wrapped-x"),
        ({"name": "Wrapped"}, None),
        ({"name": "Nothing", "symbol": "NOPE"}, None),
        ({}, None),
    ],
)
def test_resolver_prefers_ids_then_names_then_unique_symbols(observation, expected):
    resolver = AssetResolver(
        [
            ("bitcoin", "btc", "Bitcoin"),
            ("uniswap", "uni", "Uniswap"),
            ("universe-token", "uni", "Universe"),
            ("wrapped-x", "wx", "Wrapped"),
            ("wrapped-y", "wy", "Wrapped"),
        ]
    )
    fields = {"external_id": "e", "metric": "price_usd", "value": 1, "timestamp": None}
    assert resolver.resolve(Observation(**fields, **observation)) == expected


def test_a_record_without_a_symbol_takes_its_assets_ticker(client, run_etl):
    run_etl("csv1")

    body = client.get("/data?symbol=btc&source=csv1").get_json()

    assert body["pagination"]["total"] == 2
    assert {(item["asset_id"], item["symbol"]) for item in body["data"]} == {("bitcoin", "BTC")}
