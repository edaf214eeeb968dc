"""The extreme values the parser accepts, loaded by every source, break no page and no endpoint.

The largest amount (30 digits before the point, 40 after), the smallest above zero (one unit of
the 40th decimal), zero and an amount of as many digits as allowed are read from the CSV feeds
and from CoinGecko, then every route of the app is requested (found in its URL map, so that a
new route is covered without a change here), every page of it followed by its cursor, on both
engines. None may answer 5xx. Arithmetic on stored values is exact: the consensus median of an
even number of sources is the exact midpoint.
"""

import re
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlencode

import pytest

from kasparro.etl.parsing import (
    MAX_DIGITS_AFTER_POINT,
    MAX_DIGITS_BEFORE_POINT,
    InvalidValue,
    parse_amount,
)
from kasparro.extensions import db
from kasparro.models import Asset, EtlRun
from kasparro.read.anomalies import KINDS
from kasparro.read.values import consensus
from kasparro.routes.dashboard import percent, usd, usd_compact
from tests.coingecko_imitation import BASE_TIME, make_coin
from tests.conftest import ADMIN_TOKEN
from tests.csv_files import CSV1_HEADER, settle, write

LARGEST = "9" * MAX_DIGITS_BEFORE_POINT + "." + "9" * MAX_DIGITS_AFTER_POINT
SMALLEST = "0." + "0" * (MAX_DIGITS_AFTER_POINT - 1) + "1"
# As many digits as the largest, all of them significant (none is a trailing zero).
MOST_DIGITS = "1234567890" * 3 + "." + "0987654321" * 4
EXTREMES = (LARGEST, SMALLEST, "0", MOST_DIGITS)
EARLIER = BASE_TIME - timedelta(hours=25)  # more than the 24 h change window before BASE_TIME
LONG_AGO = "2009-01-03T00:00:00Z"  # before any observation the parser accepts
CSV2_HEADER = "record_id,full_name,score,created_at\n"


def stamp(moment) -> str:
    """Return ``moment`` as the CSV feeds write it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("text", EXTREMES)
def test_the_extremes_are_what_the_parser_accepts(text):
    assert parse_amount(text) == Decimal(text)


@pytest.mark.parametrize(
    "text",
    [
        "1" + "0" * MAX_DIGITS_BEFORE_POINT,  # one digit more before the point
        "0." + "0" * MAX_DIGITS_AFTER_POINT + "1",  # one digit more after it
    ],
)
def test_one_digit_beyond_the_extremes_is_refused(text):
    with pytest.raises(InvalidValue):
        parse_amount(text)


@pytest.mark.parametrize(
    ("values", "median"),
    [
        ([LARGEST, SMALLEST], "5" + "0" * (MAX_DIGITS_BEFORE_POINT - 1)),
        # The midpoint needs a 41st decimal: 71 significant digits.
        ([LARGEST, LARGEST[:-1] + "8"], LARGEST[:-1] + "85"),
        # The middle two of four: (SMALLEST + 3) / 2, with a 41st decimal.
        ([SMALLEST, "0", "3", MOST_DIGITS], "1.5" + "0" * 39 + "5"),
        (["0.1", "0.2"], "0.15"),
    ],
)
def test_the_median_of_an_even_count_is_the_exact_midpoint(values, median):
    agreed = consensus([Decimal(value) for value in values])

    assert agreed.median == Decimal(median)


def test_the_dashboards_numbers_take_any_stored_value_and_any_percentage():
    thousands = ",000"
    assert usd(LARGEST) == "$1" + thousands * 10 + ".00"
    assert usd(MOST_DIGITS) == "$123,456,789,012,345,680" + thousands * 4 + ".00"
    assert usd(SMALLEST) == "$0." + "0" * 39 + "1000"
    assert usd_compact(LARGEST) == "$1" + thousands * 6 + ".00T"
    # A spread or a change between the largest and the smallest is about 10**72 %.
    assert percent(1e72) == "1" + thousands * 24 + ".00%"
    assert percent(-1e72, signed=True) == "-1" + thousands * 24 + ".00%"
    assert percent(1e-72, signed=True) == "0.00%"


@pytest.fixture
def settings(settings):
    """Let the write routes be called, and run tasks in-process with no limit on requests."""
    return {**settings, "ETL_ADMIN_TOKEN": ADMIN_TOKEN, "REDIS_URL": "", "PUBLIC_RATE_LIMIT": ""}


@pytest.fixture
def extremes(app, run_etl, csv_paths, coingecko):
    """Load the extremes through each source: two csv1 runs, a csv2 run and a CoinGecko run."""
    write(
        csv_paths["CSV1_PATH"],
        CSV1_HEADER
        + f"bitcoin,Bitcoin,{SMALLEST},{stamp(EARLIER)}\n"
        + f"ethereum,Ethereum,{LARGEST},{stamp(EARLIER)}\n"
        + f"solana,Solana,0,{stamp(EARLIER)}\n"
        + f"tether,Tether,{MOST_DIGITS},{stamp(EARLIER)}\n"
        + f"nothing-known,Nothing Known,{LARGEST},{stamp(EARLIER)}\n",
    )
    settle(csv_paths["CSV1_PATH"])
    write(
        csv_paths["CSV2_PATH"],
        CSV2_HEADER
        + f"mc-1,Bitcoin (BTC),{LARGEST},{stamp(BASE_TIME)}\n"
        + f"mc-2,Ethereum (ETH),{SMALLEST},{stamp(BASE_TIME)}\n"
        + f"mc-3,Solana (SOL),{MOST_DIGITS},{stamp(BASE_TIME)}\n"
        + f"mc-4,Tether (USDT),0,{stamp(BASE_TIME)}\n",
    )
    settle(csv_paths["CSV2_PATH"])
    largest_integer = 10**MAX_DIGITS_BEFORE_POINT - 1
    coingecko.coins = [
        make_coin("bitcoin", "btc", "Bitcoin", largest_integer, largest_integer, 0, 1),
        make_coin("ethereum", "eth", "Ethereum", 1e-40, 1e-40, largest_integer, 2),
        make_coin("solana", "sol", "Solana", 0, 0, 1e-40, 3),
    ]
    first = run_etl("csv1", "csv2", "coingecko_api")
    write(
        csv_paths["CSV1_PATH"],
        f"bitcoin,Bitcoin,{LARGEST},{stamp(BASE_TIME)}\n"
        + f"ethereum,Ethereum,{SMALLEST},{stamp(BASE_TIME)}\n"
        + f"solana,Solana,{MOST_DIGITS},{stamp(BASE_TIME)}\n"
        + f"tether,Tether,0,{stamp(BASE_TIME)}\n",
        mode="a",
    )
    settle(csv_paths["CSV1_PATH"])
    second = run_etl("csv1")
    for run in (*first.values(), *second.values()):
        assert run.status == "SUCCESS", (run.source, run.error, run.details)


# Arguments each route is also asked with, besides none; a route not named here is asked with
# none, and every page a next_cursor leads to is followed.
VARIANTS = {
    "/data": [{"page_size": 1}, {"asset": "bitcoin", "page_size": 2}, {"page": 2}],
    "/assets": [{"sort": "name"}, {"q": "coin"}, {"page_size": 1, "page": 2}],
    "/assets/<asset_id>/history": [
        {"metric": metric, "interval": interval, "since": LONG_AGO, "limit": 1}
        for metric in ("price_usd", "market_cap_usd", "volume_24h_usd")
        for interval in ("5m", "1h", "1d")
    ],
    "/anomalies": [
        {"since": LONG_AGO, "page_size": 1},
        *({"since": LONG_AGO, "kind": kind, "page_size": 1} for kind in KINDS),
    ],
    "/compare-runs": [
        {"source": "csv1"},
        {"source": "csv1", "metric": "price_usd", "top": 1},
    ],
    "/runs": [{"limit": 1}],
    "/assets/unresolved": [{"source": "csv1"}],
}


def path_values(name: str) -> list[str]:
    """Return the values a path's ``<name>`` is filled with: every stored one."""
    if name == "asset_id":
        return [asset.id for asset in db.session.query(Asset).order_by(Asset.id)]
    if name == "run_id":
        return [str(run.id) for run in db.session.query(EtlRun).order_by(EtlRun.id)]
    if name == "filename":
        return ["dashboard/dashboard.js"]
    raise AssertionError(f"no values for <{name}>: say here what a new route's path holds")


def paths(rule: str) -> list[str]:
    """Return the rule with every combination of stored values in its variables."""
    found = [rule]
    for variable in re.findall(r"<(?:[^:>]+:)?([^>]+)>", rule):
        pattern = re.compile(rf"<(?:[^:>]+:)?{variable}>")
        found = [pattern.sub(value, path) for path in found for value in path_values(variable)]
    return found


def next_cursor(body) -> str | None:
    """Return the cursor of the next page an answer names, if any."""
    if not isinstance(body, dict):
        return None
    return body.get("next_cursor") or (body.get("pagination") or {}).get("next_cursor")


# The write routes are sent the body they document, with the admin token.
BODIES = {
    "/etl/run": {"sources": ["csv1"]},
    "/assets/aliases": {"asset_id": "ethereum", "symbol": "ETHX"},
}


def every_page(client, method: str, path: str, arguments: dict):
    """Yield the answer to a request and to each next page its cursors lead to."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    query = dict(arguments)
    for _ in range(100):
        response = client.open(
            f"{path}?{urlencode(query)}",
            method=method,
            json=BODIES.get(path) if method == "POST" else None,
            headers=auth if method == "POST" else {},
        )
        response.close()  # a static file's answer holds the file open
        yield f"{method} {path}?{urlencode(query)}", response
        cursor = next_cursor(response.get_json(silent=True))
        if cursor is None:
            return
        query["cursor"] = cursor
    raise AssertionError(f"{method} {path} {arguments}: more than 100 pages")


def test_no_page_or_endpoint_answers_5xx_with_the_extremes_stored(app, client, extremes):
    stored = {row["value"] for row in client.get("/data?page_size=100").get_json()["data"]}
    assert stored >= set(EXTREMES)
    answered, failed = 0, []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for path in paths(rule.rule):
                for arguments in [{}, *VARIANTS.get(rule.rule, [])]:
                    for request, response in every_page(client, method, path, arguments):
                        answered += 1
                        if response.status_code >= 500:
                            failed.append((request, response.get_data(as_text=True)[:200]))

    assert failed == []
    assert answered > 100


def test_differences_and_medians_of_the_extremes_are_served_exactly(client, extremes):
    movers = client.get("/compare-runs?source=csv1").get_json()["movers"]
    changes = {mover["asset_id"]: mover["change"] for mover in movers}
    bitcoin = client.get("/assets/bitcoin").get_json()
    medians = {agreed["metric"]: agreed["median"] for agreed in bitcoin["consensus"]}

    # From the smallest to the largest and back, and from the most digits to zero (solana, from
    # zero, has no relative change and is not compared).
    assert changes == {
        "bitcoin": "9" * 30 + "." + "9" * 39 + "8",
        "ethereum": "-" + "9" * 30 + "." + "9" * 39 + "8",
        "tether": "-" + MOST_DIGITS,
    }
    # csv1's largest price and CoinGecko's largest whole number: the midpoint has 41 decimals.
    assert Decimal(medians["price_usd"]) == Decimal("9" * 30 + ".4" + "9" * 39 + "5")


def test_anomaly_reasons_write_the_extremes_as_the_values_are_served(client, extremes):
    found = client.get(f"/anomalies?since={LONG_AGO}&page_size=100").get_json()["anomalies"]
    jumps = [anomaly for anomaly in found if anomaly["kind"] == "value_jump"]
    disagreements = [anomaly for anomaly in found if anomaly["kind"] == "source_disagreement"]

    assert jumps and disagreements
    for anomaly in jumps:
        jump = anomaly["jump"]
        assert f"moved from {jump['previous_value']} at" in anomaly["reason"]
        assert f"to {jump['value']} at" in anomaly["reason"]
    for anomaly in disagreements:
        disagreement = anomaly["disagreement"]
        assert f"ranges from {disagreement['low']} (" in anomaly["reason"]
        assert f"the median {disagreement['median']}," in anomaly["reason"]
    assert any(SMALLEST in anomaly["reason"] for anomaly in found)
