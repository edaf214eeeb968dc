"""Canonical asset identity across sources: names first, then symbols only when unambiguous."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from kasparro.etl.assets import ANSWERS_KEPT, AssetResolver
from kasparro.etl.sources.base import Observation
from kasparro.extensions import db
from kasparro.models import Asset, UnifiedRecord
from tests.coingecko_imitation import BASE_TIME, make_coin


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
    assert (bitcoin.origin, bitcoin.symbol, bitcoin.name) == ("coingecko_api", "btc", "Bitcoin")


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


# Where the rules disagree: the id, the name and the symbol of one record point at different coins.
DISAGREEING_ASSETS = [
    ("bitcoin", "btc", "Bitcoin"),
    ("ethereum", "eth", "Ethereum"),
    ("tether", "usdt", "Tether"),
    ("uniswap", "uni", "Uniswap"),
    ("universe-token", "uni", "Universe"),
    ("wrapped-x", "wx", "Wrapped"),
    ("wrapped-y", "wy", "Wrapped"),
]


def resolve(**observation) -> str | None:
    """Resolve one observation against ``DISAGREEING_ASSETS``."""
    fields = {"external_id": "e", "metric": "price_usd", "value": 1, "timestamp": None}
    return AssetResolver(DISAGREEING_ASSETS).resolve(Observation(**fields, **observation))


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        ({"asset_hint": "ethereum", "name": "Bitcoin", "symbol": "USDT"}, "ethereum"),
        ({"asset_hint": "tether", "name": "Ethereum", "symbol": "BTC"}, "tether"),
        ({"asset_hint": "uniswap", "name": "Universe", "symbol": "WX"}, "uniswap"),
        ({"asset_hint": "wrapped-y", "name": "Wrapped", "symbol": "WX"}, "wrapped-y"),
        ({"asset_hint": "universe-token", "symbol": "UNI"}, "universe-token"),
    ],
)
def test_a_known_id_wins_over_a_name_and_a_symbol_of_other_coins(observation, expected):
    assert resolve(**observation) == expected


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        ({"asset_hint": "not-listed", "name": "Bitcoin", "symbol": "ETH"}, "bitcoin"),
        ({"asset_hint": "not-listed", "name": "Unheard Of", "symbol": "ETH"}, "ethereum"),
        ({"asset_hint": "not-listed", "symbol": "USDT"}, "tether"),
        ({"asset_hint": "not-listed", "name": "Unheard Of"}, None),
    ],
)
def test_an_unknown_id_falls_back_to_the_name_then_the_symbol(observation, expected):
    assert resolve(**observation) == expected


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        ({"name": "Bitcoin", "symbol": "ETH"}, "bitcoin"),
        ({"name": "Tether", "symbol": "BTC"}, "tether"),
        ({"name": "Uniswap", "symbol": "WX"}, "uniswap"),
        ({"name": "Universe", "symbol": "USDT"}, "universe-token"),
    ],
)
def test_a_name_wins_over_a_unique_symbol_of_another_coin(observation, expected):
    assert resolve(**observation) == expected


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        ({"name": "Unheard Of", "symbol": "ETH"}, "ethereum"),
        ({"name": "", "symbol": "USDT"}, "tether"),
        ({"symbol": "WY"}, "wrapped-y"),
        ({"name": "Unheard Of", "symbol": "NOPE"}, None),
    ],
)
def test_a_unique_symbol_is_used_only_when_neither_id_nor_name_resolves(observation, expected):
    assert resolve(**observation) == expected


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        ({"name": "bItCoIn"}, "bitcoin"),
        ({"name": "  ETHEREUM  ", "symbol": "usdt"}, "ethereum"),
        ({"symbol": "BtC"}, "bitcoin"),
        ({"name": "Unheard Of", "symbol": " eth "}, "ethereum"),
        ({"name": "WRAPPED", "symbol": "wy"}, "wrapped-y"),
    ],
)
def test_names_and_symbols_match_whatever_their_case_and_spacing(observation, expected):
    assert resolve(**observation) == expected


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        ({"name": "Wrapped", "symbol": "WX"}, "wrapped-x"),
        ({"name": "Wrapped", "symbol": "WY"}, "wrapped-y"),
        ({"name": "Wrapped"}, None),
        # The name says "Wrapped", so the coin is neither of them nor the symbol's own coin.
        ({"name": "Wrapped", "symbol": "BTC"}, None),
    ],
)
def test_a_name_two_coins_share_is_narrowed_by_the_symbol(observation, expected):
    assert resolve(**observation) == expected


@pytest.mark.parametrize(
    "observation",
    [
        {"symbol": "UNI"},
        {"name": "Unheard Of", "symbol": "uni"},
        {"asset_hint": "not-listed", "symbol": "UNI"},
    ],
)
def test_a_symbol_two_coins_share_resolves_to_nothing(observation):
    assert resolve(**observation) is None


def resolved_rows(source: str) -> dict[str, str | None]:
    """Return the asset of every row of ``source`` dated after the bundled feeds."""
    return dict(
        db.session.execute(
            sa.select(UnifiedRecord.external_id, UnifiedRecord.asset_id).where(
                UnifiedRecord.source == source,
                UnifiedRecord.timestamp >= datetime(2025, 12, 28, tzinfo=UTC),
            )
        ).all()
    )


@pytest.mark.parametrize(
    ("source", "lines", "expected"),
    [
        pytest.param(
            "csv1",
            [
                "ethereum,Bitcoin,2.5,2025-12-28T00:00:00Z",
                "TETHER,Ethereum,1.0,2025-12-28T00:00:00Z",
            ],
            {"ethereum": "ethereum", "TETHER": "tether"},
            id="csv1-id-over-name",
        ),
        pytest.param(
            "csv1",
            [
                "unlisted,Bitcoin,2.5,2025-12-28T00:00:00Z",
                "unlisted-2,ETHEREUM,1,2025-12-28T00:00Z",
            ],
            {"unlisted": "bitcoin", "unlisted-2": "ethereum"},
            id="csv1-name-when-the-id-is-unknown",
        ),
        pytest.param(
            "csv2",
            ["n-1,Bitcoin (ETH),1M,2025-12-28", "n-2,tether (btc),2M,2025-12-28"],
            {"n-1": "bitcoin", "n-2": "tether"},
            id="csv2-name-over-symbol",
        ),
        pytest.param(
            "csv2",
            ["s-1,Unheard Of (ETH),1M,2025-12-28", "s-2,Unheard Of (usdt),2M,2025-12-28"],
            {"s-1": "ethereum", "s-2": "tether"},
            id="csv2-symbol-when-the-name-is-unknown",
        ),
        pytest.param(
            "csv2",
            ["u-1,Unheard Of (NOPE),1M,2025-12-28", "u-2,Unheard Of,2M,2025-12-28"],
            {"u-1": None, "u-2": None},
            id="csv2-nothing-resolves",
        ),
    ],
)
def test_csv_rows_resolve_by_id_then_name_then_unique_symbol(
    app, csv_paths, run_etl, source, lines, expected
):
    path = csv_paths["CSV1_PATH" if source == "csv1" else "CSV2_PATH"]
    with open(path, "a", encoding="utf-8") as feed:
        feed.writelines(line + "\n" for line in lines)

    run = run_etl(source)[source]

    assert run.status in {"SUCCESS", "PARTIAL"}, run.error  # the bundled csv2 has bad rows
    assert resolved_rows(source) == expected


@pytest.mark.parametrize(
    ("coins", "csv2_lines", "expected_coingecko", "expected_csv2"),
    [
        pytest.param(
            [("bitcoin", "btc", "Bitcoin"), ("bridged-btc", "eth", "Bitcoin")],
            ["b-1,Bitcoin (BTC),1M,2025-12-28", "b-2,Bitcoin (ETH),2M,2025-12-28"],
            {"bitcoin": "bitcoin", "bridged-btc": "bridged-btc"},
            {"b-1": "bitcoin", "b-2": "bridged-btc"},
            id="an-id-over-a-shared-name-and-symbol",
        ),
        pytest.param(
            [("wrapped-x", "wx", "Wrapped"), ("wrapped-y", "wy", "Wrapped")],
            [
                "w-1,Wrapped (WY),1M,2025-12-28",
                "w-2,wrapped (wx),2M,2025-12-28",
                "w-3,Wrapped,3M,2025-12-28",
                "w-4,Wrapped (BTC),4M,2025-12-28",
            ],
            {"wrapped-x": "wrapped-x", "wrapped-y": "wrapped-y"},
            {"w-1": "wrapped-y", "w-2": "wrapped-x", "w-3": None, "w-4": None},
            id="a-shared-name-narrowed-by-symbol",
        ),
    ],
)
def test_coingecko_ids_win_and_a_shared_name_is_narrowed_by_the_symbol(
    app, coingecko, csv_paths, run_etl, coins, csv2_lines, expected_coingecko, expected_csv2
):
    coingecko.coins = [
        make_coin(coin_id, symbol, name, 1.0, 1_000_000, 1000, rank, BASE_TIME + timedelta(1))
        for rank, (coin_id, symbol, name) in enumerate(coins, start=1)
    ]
    with open(csv_paths["CSV2_PATH"], "a", encoding="utf-8") as feed:
        feed.writelines(line + "\n" for line in csv2_lines)

    runs = run_etl("coingecko_api", "csv2")

    assert {run.status for run in runs.values()} <= {"SUCCESS", "PARTIAL"}
    assert resolved_rows("coingecko_api") == expected_coingecko
    assert resolved_rows("csv2") == expected_csv2


def test_an_answer_kept_by_the_resolver_changes_when_it_learns_an_asset():
    resolver = AssetResolver([("uniswap", "uni", "Uniswap")])
    fields = {"external_id": "e", "metric": "price_usd", "value": 1, "timestamp": None}
    by_symbol = Observation(**fields, symbol="UNI")
    by_name = Observation(**fields, name="Solana")
    assert (resolver.resolve(by_symbol), resolver.resolve(by_name)) == ("uniswap", None)

    resolver.add("universe-token", "uni", "Universe")  # the ticker is now shared
    resolver.add("solana", "sol", "Solana")

    assert (resolver.resolve(by_symbol), resolver.resolve(by_name)) == (None, "solana")


def test_the_resolvers_kept_answers_stay_bounded_whatever_the_feed_names():
    resolver = AssetResolver([("bitcoin", "btc", "Bitcoin")])
    fields = {"external_id": "e", "metric": "price_usd", "value": 1, "timestamp": None}
    for i in range(ANSWERS_KEPT + 50):
        assert resolver.resolve(Observation(**fields, name=f"Coin {i}")) is None
    assert len(resolver._answers) <= ANSWERS_KEPT
    assert resolver.resolve(Observation(**fields, name="BITCOIN")) == "bitcoin"


ALIASES = [
    ("name", "XBT Coin", "bitcoin"),
    ("name", "wrapped", "wrapped-x"),
    ("symbol", "UNI", "uniswap"),
    ("symbol", "xbt", "bitcoin"),
]


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        pytest.param({"name": " xbt COIN "}, "bitcoin", id="a-name-alias"),
        pytest.param({"symbol": "Xbt"}, "bitcoin", id="a-symbol-alias"),
        pytest.param({"name": "XBT Coin"}, "bitcoin", id="a-name-alias-over-nothing"),
        pytest.param(
            {"name": "XBT Coin", "symbol": "ETH"}, "ethereum", id="a-unique-symbol-over-name-alias"
        ),
        pytest.param(
            {"asset_hint": "ethereum", "name": "XBT Coin"}, "ethereum", id="id-over-alias"
        ),
        pytest.param({"name": "Wrapped"}, "wrapped-x", id="a-shared-name-settled"),
        pytest.param({"name": "Wrapped", "symbol": "WY"}, "wrapped-y", id="narrowing-over-alias"),
        pytest.param({"symbol": "uni"}, "uniswap", id="a-shared-ticker-settled"),
        pytest.param({"name": "Unheard Of", "symbol": "UNI"}, "uniswap", id="unknown-name"),
        pytest.param({"name": "Universe", "symbol": "UNI"}, "universe-token", id="name-over-alias"),
        pytest.param({"name": "Tether", "symbol": "XBT"}, "tether", id="name-over-symbol-alias"),
    ],
)
def test_an_alias_settles_a_name_or_symbol_but_never_changes_an_answer_given_without_it(
    observation, expected
):
    fields = {"external_id": "e", "metric": "price_usd", "value": 1, "timestamp": None}
    resolver = AssetResolver(DISAGREEING_ASSETS, ALIASES)
    assert resolver.resolve(Observation(**fields, **observation)) == expected


def test_an_answer_kept_by_the_resolver_changes_when_it_learns_an_alias():
    resolver = AssetResolver(DISAGREEING_ASSETS)
    assert resolver.identify(None, "UNI") is None

    resolver.add_alias("symbol", " uni ", "universe-token")

    assert resolver.identify(None, "UNI") == "universe-token"
