"""GET /assets and GET /assets/<id> on crafted observations: consensus, spread, 24 h change,
search, sort and paging, on both engines; and, on PostgreSQL, the plans of the newest-value reads.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from kasparro.extensions import db
from kasparro.models import AssetAlias
from kasparro.read.assets import list_assets, newest_values, resolved_from
from kasparro.read.values import latest_values
from tests.crafted import Crafted
from tests.plans import executed_plans, unified_indexes, unified_scans

T0 = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def crafted(app):
    """Return a store of crafted observations on an empty database of each engine."""
    return Crafted()


def at(hours: float) -> datetime:
    """Return T0 moved by ``hours``."""
    return T0 + hours * HOUR


# --- GET /assets/<id> ----------------------------------------------------------------------------


@pytest.fixture
def bitcoin(crafted):
    """Bitcoin seen by three sources under several names, with an operator's alias."""
    crafted.asset("bitcoin", "BTC", "Bitcoin")
    crafted.asset("ethereum", "ETH", "Ethereum")
    seen = {"name": "Bitcoin", "symbol": "BTC"}
    # Stored newest first: the newest value is chosen by time, not by id.
    crafted.observe("bitcoin", "coingecko_api", "price_usd", "100", at(0), **seen)
    crafted.observe("bitcoin", "coingecko_api", "price_usd", "90", at(-1), **seen)
    crafted.observe("bitcoin", "coingecko_api", "market_cap_usd", "2000", at(0), **seen)
    crafted.observe("bitcoin", "csv1", "price_usd", "95", at(-3), name="Bitcoin")
    crafted.observe("bitcoin", "csv1", "price_usd", "80", at(-4), name="XBT")
    crafted.observe("bitcoin", "csv1", "price_usd", "81", at(-5), name="XBT")
    crafted.observe("bitcoin", "csv2", "price_usd", "120.5", at(-2), name="Bitcoin", symbol="BTC")
    crafted.observe("bitcoin", "csv2", "market_cap_usd", "1000", at(-2), name="Bitcoin (BTC)")
    crafted.observe("ethereum", "csv1", "price_usd", "3000", at(1), name="Ethereum")
    crafted.observe(None, "csv1", "price_usd", "1", at(1), name="Bitcoin Cash")
    db.session.add(AssetAlias(kind="symbol", alias="xbt", asset_id="bitcoin"))
    db.session.commit()


def test_an_asset_shows_each_sources_newest_value_and_their_median_and_spread(client, bitcoin):
    body = client.get("/assets/bitcoin").get_json()

    assert body["id"] == "bitcoin" and body["symbol"] == "BTC" and body["name"] == "Bitcoin"
    assert body["latest"] == [
        {"source": "coingecko_api", "metric": "market_cap_usd", "value": "2000",
         "timestamp": "2025-01-10T12:00:00+00:00"},
        {"source": "csv2", "metric": "market_cap_usd", "value": "1000",
         "timestamp": "2025-01-10T10:00:00+00:00"},
        {"source": "coingecko_api", "metric": "price_usd", "value": "100",
         "timestamp": "2025-01-10T12:00:00+00:00"},
        {"source": "csv1", "metric": "price_usd", "value": "95",
         "timestamp": "2025-01-10T09:00:00+00:00"},
        {"source": "csv2", "metric": "price_usd", "value": "120.5",
         "timestamp": "2025-01-10T10:00:00+00:00"},
    ]  # fmt: skip
    # Prices 95, 100, 120.5: median 100, spread (120.5 - 95) / 100 = 25.5 %.
    # Market caps 1000, 2000: median 1500, spread 1000 / 1500 = 66.67 %.
    market_cap, price = body["consensus"]
    assert price == {
        "metric": "price_usd",
        "median": "100",
        "low": "95",
        "high": "120.5",
        "spread_percent": 25.5,
        "sources": 3,
    }
    assert market_cap["median"] == "1500" and market_cap["sources"] == 2
    assert (market_cap["low"], market_cap["high"]) == ("1000", "2000")
    assert market_cap["spread_percent"] == pytest.approx(200 / 3)
    assert body["last_reported"] == [
        {"source": "coingecko_api", "timestamp": "2025-01-10T12:00:00+00:00"},
        {"source": "csv1", "timestamp": "2025-01-10T09:00:00+00:00"},
        {"source": "csv2", "timestamp": "2025-01-10T10:00:00+00:00"},
    ]


def test_an_asset_shows_the_names_it_was_resolved_from_and_its_aliases(client, bitcoin):
    body = client.get("/assets/bitcoin").get_json()

    assert body["resolved_from"] == [
        {"name": "Bitcoin", "symbol": "BTC", "source": "coingecko_api", "observations": 3},
        {"name": "Bitcoin", "symbol": None, "source": "csv1", "observations": 1},
        {"name": "XBT", "symbol": None, "source": "csv1", "observations": 2},
        {"name": "Bitcoin", "symbol": "BTC", "source": "csv2", "observations": 1},
        {"name": "Bitcoin (BTC)", "symbol": None, "source": "csv2", "observations": 1},
        {"name": None, "symbol": "xbt", "source": "alias", "observations": None},
    ]


def test_the_names_are_read_from_the_newest_observations_only(app, bitcoin, monkeypatch):
    monkeypatch.setattr("kasparro.read.assets.RESOLVED_FROM_WINDOW", 6)

    # The two oldest, csv1's "XBT" rows at -4 h and -5 h, are outside the newest six.
    assert {(r["source"], r["name"]) for r in resolved_from(db.session, "bitcoin")} == {
        ("coingecko_api", "Bitcoin"),
        ("csv1", "Bitcoin"),
        ("csv2", "Bitcoin"),
        ("csv2", "Bitcoin (BTC)"),
        ("alias", None),
    }


@pytest.mark.parametrize("asset_id", ["no-such-coin", "x" * 201, "bit%00coin"])
def test_an_unknown_asset_is_a_json_404(client, bitcoin, asset_id):
    response = client.get(f"/assets/{asset_id}")

    assert response.status_code == 404
    assert response.get_json()["message"] == "no asset has this id"


def test_an_asset_without_observations_has_empty_lists(client, crafted):
    crafted.asset("dogecoin", "DOGE", "Dogecoin")
    db.session.commit()

    body = client.get("/assets/dogecoin").get_json()

    assert body["latest"] == body["consensus"] == body["last_reported"] == []
    assert body["resolved_from"] == []


# --- GET /assets --------------------------------------------------------------------------------


@pytest.fixture
def market(crafted):
    """Five assets with observations (one without a market cap) and one without any."""
    caps = {"bitcoin": "1000", "ethereum": "500", "tether": "500", "dogecoin": "20"}
    for asset_id, symbol, name in [
        ("bitcoin", "BTC", "Bitcoin"),
        ("ethereum", "ETH", "Ethereum"),
        ("tether", "USDT", "Tether"),
        ("dogecoin", "DOGE", "Dogecoin"),
        ("wrapped-bitcoin", "WBTC", "Wrapped Bitcoin"),
        ("solana", "SOL", "Solana"),
    ]:
        crafted.asset(asset_id, symbol, name)
    for asset_id, cap in caps.items():
        crafted.observe(asset_id, "coingecko_api", "market_cap_usd", cap, at(0))
        crafted.observe(asset_id, "coingecko_api", "price_usd", "1", at(0))
    crafted.observe("wrapped-bitcoin", "csv1", "price_usd", "2", at(0))
    db.session.commit()


def ids(body: dict) -> list[str]:
    """Return the asset ids of a /assets body, in order."""
    return [asset["id"] for asset in body["assets"]]


def test_assets_sort_by_consensus_market_cap_then_id_with_none_last(client, market):
    body = client.get("/assets").get_json()

    # ethereum and tether tie on 500: the id decides. wrapped-bitcoin has no market cap; solana
    # has no observation at all and is not listed.
    assert ids(body) == ["bitcoin", "ethereum", "tether", "dogecoin", "wrapped-bitcoin"]
    assert body["pagination"] == {"page": 1, "page_size": 10, "total": 5, "total_pages": 1}
    assert body["assets"][0]["market_cap_usd"] == "1000"
    assert body["assets"][-1]["market_cap_usd"] is None


def test_assets_sort_by_name_case_insensitively(client, market):
    body = client.get("/assets?sort=name").get_json()

    assert ids(body) == ["bitcoin", "dogecoin", "ethereum", "tether", "wrapped-bitcoin"]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("BITCOIN", ["bitcoin", "wrapped-bitcoin"]),  # a substring of the name, in any case
        ("btc", ["bitcoin", "wrapped-bitcoin"]),  # a substring of the symbol
        ("coin", ["bitcoin", "dogecoin", "wrapped-bitcoin"]),
        ("reum", ["ethereum"]),
        ("usdt", ["tether"]),
        ("%", []),  # LIKE's wildcards are matched as themselves
        ("_", []),
        ("sol", []),  # Solana has no observations
    ],
)
def test_assets_are_searched_by_part_of_the_name_or_symbol(client, market, q, expected):
    body = client.get("/assets", query_string={"q": q, "sort": "name"}).get_json()

    assert ids(body) == expected
    assert body["pagination"]["total"] == len(expected)


@pytest.mark.parametrize("sort", ["market_cap", "name"])
def test_asset_pages_neither_repeat_nor_skip(client, market, sort):
    everything = ids(client.get(f"/assets?sort={sort}").get_json())

    pages = [
        client.get(f"/assets?sort={sort}&page_size=2&page={n}").get_json() for n in (1, 2, 3, 4)
    ]

    assert [ids(page) for page in pages] == [everything[0:2], everything[2:4], everything[4:], []]
    assert {page["pagination"]["total_pages"] for page in pages} == {3}


@pytest.mark.parametrize(
    "query", ["sort=price", "page=0", "page_size=101", "page_size=0", "q=", "q=" + "a" * 101]
)
def test_bad_list_arguments_are_a_422_naming_the_argument(client, market, query):
    response = client.get(f"/assets?{query}")

    assert response.status_code == 422
    assert list(response.get_json()["errors"]["query"]) == [query.split("=")[0]]


@pytest.fixture
def moving(crafted):
    """Bitcoin's price from two sources over more than a day; ether's over less than one."""
    crafted.asset("bitcoin", "BTC", "Bitcoin")
    crafted.asset("ethereum", "ETH", "Ethereum")
    for hours, value in [(-25, "50"), (-24, "100"), (-1, "105"), (0, "110")]:
        crafted.observe("bitcoin", "coingecko_api", "price_usd", value, at(hours))
    for hours, value in [(-30, "100"), (-23, "500"), (-2, "120")]:
        crafted.observe("bitcoin", "csv1", "price_usd", value, at(hours))
    for hours, value in [(-5, "3000"), (0, "3300")]:
        crafted.observe("ethereum", "coingecko_api", "price_usd", value, at(hours))
    db.session.commit()


def test_the_24h_change_compares_the_consensus_with_the_one_a_day_before(client, moving):
    bitcoin, ethereum = client.get("/assets?sort=name").get_json()["assets"]

    # Newest price at T0. Now: 110 and 120, median 115. At or before T0 - 24 h: 100 (at that
    # very moment) and 100 (csv1 at -30 h; its 500 at -23 h is later). (115 - 100) / 100 = 15 %.
    assert bitcoin["price_usd"] == "115"
    assert bitcoin["change_24h_percent"] == 15.0
    assert bitcoin["spread_percent"] == pytest.approx(10 / 115 * 100)
    assert bitcoin["sources"] == ["coingecko_api", "csv1"]
    assert bitcoin["last_reported_at"] == "2025-01-10T12:00:00+00:00"
    # No observation of ether a day before its newest one.
    assert ethereum["price_usd"] == "3300" and ethereum["change_24h_percent"] is None


def test_list_assets_returns_the_body_as_plain_values(app, moving):
    body = list_assets(db.session, q="bit", sort="market_cap", page=1, page_size=5)

    assert body["pagination"] == {"page": 1, "page_size": 5, "total": 1, "total_pages": 1}
    [bitcoin] = body["assets"]
    assert bitcoin["price_usd"] == Decimal("115")
    assert bitcoin["market_cap_usd"] is None
    assert bitcoin["last_reported_at"] == T0


def test_newest_values_agree_with_latest_values_for_every_asset(app, bitcoin):
    found = newest_values(db.session, ["bitcoin", "ethereum", "no-such-coin"])

    assert found == {
        "bitcoin": latest_values(db.session, "bitcoin"),
        "ethereum": latest_values(db.session, "ethereum"),
    }


# --- plans on PostgreSQL ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "read",
    [
        lambda: latest_values(db.session, "asset7"),
        lambda: list_assets(db.session, sort="market_cap", page=1, page_size=10),
        lambda: list_assets(db.session, q="coin 1", sort="name", page=2, page_size=5),
    ],
    ids=["latest_values", "list_by_market_cap", "list_by_name"],
)
def test_newest_values_are_index_probes_on_postgresql(filled_assets, read):
    plans = executed_plans(read)

    assert plans
    for plan in plans:
        assert unified_indexes(plan) == {"ix_unified_asset_metric_timestamp_id"}, plan


def test_the_names_are_a_bounded_index_read_on_postgresql(filled_assets, monkeypatch):
    monkeypatch.setattr("kasparro.read.assets.RESOLVED_FROM_WINDOW", 10)

    [plan] = executed_plans(lambda: resolved_from(db.session, "asset7"))

    assert unified_indexes(plan) == {"ix_unified_asset_timestamp_id"}, plan
    assert sum(scan["Actual Rows"] for scan in unified_scans(plan)) == 10
