"""GET /assets/<id>/history: OHLC buckets computed in the database, exact on a crafted series on
both engines, paged by cursor; and, on PostgreSQL, served by the asset-metric index.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from kasparro.extensions import db
from kasparro.read.history import asset_history
from tests.crafted import Crafted
from tests.plans import executed_plans, unified_indexes


def moment(text: str) -> datetime:
    """Return the time ``HH:MM[:SS[.ffffff]]`` (UTC) on 2025-03-01, the day of the series."""
    return datetime.fromisoformat(f"2025-03-01T{text}+00:00")


# (source, time, value), stored in this order: ids rise down the list.
SERIES = [
    ("coingecko_api", "00:05", "10"),
    ("csv1", "00:05", "8"),  # same time as the row above, a higher id: after it
    ("csv1", "00:30", "100.5"),  # greater than "15" as a number, smaller as text
    ("coingecko_api", "00:20", "15"),  # stored after 00:30, earlier in time
    ("coingecko_api", "00:59:59.999999", "13"),  # still the 00:00 bucket
    ("csv1", "00:59:59.999999", "12"),  # same time, a higher id: the close
    # Nothing between 01:00 and 02:00: no bucket.
    ("coingecko_api", "02:00", "20"),  # exactly on a bucket's start: in that bucket
    ("csv1", "02:30", "25"),
    ("coingecko_api", "03:15", "7.5"),
]


def bucket(hour: str, open_: str, high: str, low: str, close: str, count: int) -> dict:
    """Return a bucket of the series as the API shows it, starting at ``hour`` (``HH:MM``)."""
    start = f"2025-03-01T{hour}:00+00:00"
    return {"start": start, "open": open_, "high": high, "low": low, "close": close, "count": count}


ALL_SOURCES_1H = [
    bucket("00:00", "10", "100.5", "8", "12", 6),
    bucket("02:00", "20", "25", "20", "25", 2),
    bucket("03:00", "7.5", "7.5", "7.5", "7.5", 1),
]


@pytest.fixture
def series(app):
    """Bitcoin's price as SERIES, with other metrics and assets stored in the same hours."""
    crafted = Crafted()
    crafted.asset("bitcoin", "BTC", "Bitcoin")
    crafted.asset("ethereum", "ETH", "Ethereum")
    for source, time, value in SERIES:
        crafted.observe("bitcoin", source, "price_usd", value, moment(time))
        crafted.observe("bitcoin", source, "market_cap_usd", "999999", moment(time))
        crafted.observe("ethereum", source, "price_usd", "0.001", moment(time))
    db.session.commit()


def history(client, query: str = "", asset: str = "bitcoin"):
    """Return the response of GET /assets/<asset>/history?<query>."""
    return client.get(f"/assets/{asset}/history?{query}")


def test_hourly_buckets_are_exact_across_sources(client, series):
    body = history(client, "interval=1h").get_json()

    assert body == {
        "asset_id": "bitcoin",
        "metric": "price_usd",
        "source": None,
        "interval": "1h",
        "buckets": ALL_SOURCES_1H,
        "next_cursor": None,
    }


def test_one_sources_buckets_leave_the_others_out(client, series):
    body = history(client, "interval=1h&source=csv1").get_json()

    assert body["source"] == "csv1"
    assert body["buckets"] == [
        bucket("00:00", "8", "100.5", "8", "12", 3),
        bucket("02:00", "25", "25", "25", "25", 1),
    ]


def test_five_minute_and_daily_buckets(client, series):
    five = history(client, "interval=5m&until=2025-03-01T00:35:00Z").get_json()["buckets"]
    daily = history(client, "interval=1d").get_json()["buckets"]

    assert [(b["start"][11:16], b["open"], b["close"], b["count"]) for b in five] == [
        ("00:05", "10", "8", 2),
        ("00:20", "15", "15", 1),
        ("00:30", "100.5", "100.5", 1),
    ]
    assert daily == [bucket("00:00", "10", "100.5", "7.5", "7.5", 9)]


def test_since_is_inclusive_and_until_exclusive(client, series):
    body = history(client, "since=2025-03-01T00:30:00Z&until=2025-03-01T02:30:00Z").get_json()

    # From 00:30 (its row included) to 02:30 (its row left out); the first bucket holds only the
    # observations from 00:30 on.
    assert body["buckets"] == [
        bucket("00:00", "100.5", "100.5", "12", "12", 3),
        bucket("02:00", "20", "20", "20", "20", 1),
    ]


def pages(client, query: str) -> list[dict]:
    """Return every page of a history, following next_cursor from the first."""
    found = [history(client, query).get_json()]
    while found[-1]["next_cursor"]:
        found.append(history(client, f"{query}&cursor={found[-1]['next_cursor']}").get_json())
    return found


@pytest.mark.parametrize(
    ("limit", "page_starts"),
    [
        (1, [["00"], ["02"], ["03"]]),  # each page starts at the bucket of its first row
        (2, [["00"], ["02", "03"]]),  # 00:00 + 2 h ends before 02:00
        (3, [["00", "02"], ["03"]]),
        (4, [["00", "02", "03"]]),
    ],
)
def test_cursor_pages_neither_repeat_nor_skip_a_bucket(client, series, limit, page_starts):
    walked = pages(client, f"interval=1h&limit={limit}")

    assert [[b["start"][11:13] for b in page["buckets"]] for page in walked] == page_starts
    assert [b for page in walked for b in page["buckets"]] == ALL_SOURCES_1H


def test_a_cursor_page_keeps_the_range(client, series):
    walked = pages(client, "interval=1h&limit=1&until=2025-03-01T02:30:00Z")

    assert [b["count"] for page in walked for b in page["buckets"]] == [6, 1]


@pytest.mark.parametrize(
    ("query", "argument"),
    [
        ("interval=2h", "interval"),
        ("metric=price", "metric"),
        ("source=nowhere", "source"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("since=yesterday", "since"),
        ("since=2025-03-02T00:00:00Z&until=2025-03-01T00:00:00Z", "since"),
    ],
)
def test_bad_arguments_are_a_422_naming_them(client, series, query, argument):
    response = history(client, query)

    assert response.status_code == 422
    assert list(response.get_json()["errors"]["query"]) == [argument]


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "eyJiIjoxfQ",  # {"b":1}: not on an hour
        "eyJiIjoiMSJ9",  # {"b":"1"}
        "eyJiIjozNjAwMDAwMDAwMDAwMDAwMDAwMDAwfQ",  # {"b":3600 * 10**18}: past any date
    ],
)
def test_a_cursor_this_server_did_not_issue_is_a_400_naming_it(client, series, cursor):
    response = history(client, f"interval=1h&cursor={cursor}")

    assert response.status_code == 400
    assert list(response.get_json()["errors"]["query"]) == ["cursor"]


def test_a_five_minute_cursor_is_refused_for_hourly_buckets(client, series):
    five_minute = history(client, "interval=5m&limit=1").get_json()["next_cursor"]

    response = history(client, f"interval=1h&cursor={five_minute}")

    assert response.status_code == 400


def test_an_unknown_asset_has_no_history_and_a_known_one_may_have_none(client, series):
    assert history(client, asset="no-such-coin").status_code == 404
    empty = history(client, "since=2030-01-01T00:00:00Z").get_json()
    assert (empty["buckets"], empty["next_cursor"]) == ([], None)


def test_buckets_before_1970_start_on_their_boundary(app, series):
    crafted = Crafted()
    crafted.observe(
        "bitcoin", "csv1", "volume_24h_usd", "1", datetime(1969, 12, 31, 23, 59, 30, tzinfo=UTC)
    )
    crafted.observe(
        "bitcoin", "csv1", "volume_24h_usd", "2", datetime(1970, 1, 1, 0, 0, 30, tzinfo=UTC)
    )
    db.session.commit()

    body = asset_history(db.session, "bitcoin", metric="volume_24h_usd", interval="5m")

    assert [(b["start"], b["count"]) for b in body["buckets"]] == [
        (datetime(1969, 12, 31, 23, 55, tzinfo=UTC), 1),
        (datetime(1970, 1, 1, tzinfo=UTC), 1),
    ]


# A history backfill stores old points after live ones: within a bucket, ids do not follow time.
# (time, value) in the order stored; the open is 10:05's and the close 10:55's in both.
BACKFILLED = {
    "open_stored_last": [
        ("10:55", "30"),  # a live snapshot, stored first: the close
        ("10:40", "25"),
        ("10:20", "9"),
        ("10:05", "11"),  # the backfill's oldest point, stored last: the open
    ],
    "close_stored_first_open_in_between": [
        ("10:55", "40"),  # the close, the lowest id
        ("10:30", "35"),
        ("10:05", "12"),  # the open, neither first nor last by id
        ("10:35", "50"),
        ("10:50", "20"),
    ],
}


@pytest.mark.parametrize("stored", list(BACKFILLED.values()), ids=list(BACKFILLED))
@pytest.mark.parametrize("source", ["coingecko_api", None], ids=["one_source", "all_sources"])
def test_a_buckets_open_and_close_go_by_time_when_old_points_are_stored_after_new(
    client, app, stored, source
):
    crafted = Crafted()
    crafted.asset("solana", "SOL", "Solana")
    for time, value in stored:
        crafted.observe("solana", "coingecko_api", "price_usd", value, moment(time))
    db.session.commit()
    by_time = sorted(stored)
    values = sorted((Decimal(value) for _, value in stored))
    expected = {
        "open": by_time[0][1],
        "high": str(values[-1]),
        "low": str(values[0]),
        "close": by_time[-1][1],
        "count": len(stored),
    }

    for interval, start in (("1h", "10:00"), ("1d", "00:00")):
        query = f"interval={interval}" + (f"&source={source}" if source else "")
        [found] = history(client, query, asset="solana").get_json()["buckets"]

        assert found == {"start": f"2025-03-01T{start}:00+00:00", **expected}


# --- the plan on PostgreSQL ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {"interval": "1h"},
        {"interval": "5m", "source": "csv1", "limit": 12},
        {"interval": "1d", "since": datetime.now(UTC) - timedelta(days=2)},
    ],
    ids=["1h", "5m_one_source", "1d_since"],
)
def test_history_is_served_by_the_asset_metric_index_on_postgresql(filled_assets, arguments):
    [plan] = executed_plans(lambda: asset_history(db.session, "asset7", **arguments))

    assert unified_indexes(plan) == {"ix_unified_asset_metric_timestamp_id"}, plan
