"""The CoinGecko imitation's ``/coins/{id}/market_chart/range``: granularity, the demo plan's
365 days, errors and faults, all over real HTTP on loopback."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.coingecko_imitation import BASE_TIME, DEMO_RANGE_MESSAGE, Fault

NOW_S = BASE_TIME.timestamp()
DAY = 86400
HOUR_MS = 3_600_000


def history(coingecko, coin_id="bitcoin", from_s=None, to_s=None, **query):
    """Ask the imitation for a range, as the backfill will: UNIX seconds, ``vs_currency=usd``."""
    params = {"vs_currency": "usd", "from": from_s, "to": to_s, **query}
    params = {k: v for k, v in params.items() if v is not None}
    return requests.get(coingecko.history.url(coin_id), params=params, timeout=5)


def spacing(points) -> set[int]:
    return {b[0] - a[0] for a, b in zip(points, points[1:], strict=False)}


def test_the_history_url_shares_the_markets_base(coingecko):
    base = coingecko.url.removesuffix("/coins/markets")
    assert coingecko.history.url("bitcoin") == base + "/coins/bitcoin/market_chart/range"


@pytest.mark.parametrize("days", [2, 30, 90])
def test_two_to_ninety_days_are_hourly(coingecko, days):
    to_s = NOW_S - 7 * DAY
    from_s = to_s - days * DAY
    answer = history(coingecko, from_s=from_s, to_s=to_s)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"prices", "market_caps", "total_volumes"}
    prices = body["prices"]
    assert len(prices) == days * 24
    assert spacing(prices) == {HOUR_MS}
    assert from_s * 1000 <= prices[0][0] and prices[-1][0] <= to_s * 1000
    assert {t % HOUR_MS for t, _ in prices} == {41_331}
    for metric in ("market_caps", "total_volumes"):
        assert [t for t, _ in body[metric]] == [t for t, _ in prices]


@pytest.mark.parametrize("days", [91, 200])
def test_over_ninety_days_are_daily_at_midnight(coingecko, days):
    from_s = NOW_S - days * DAY
    prices = history(coingecko, from_s=from_s, to_s=NOW_S).json()["prices"]
    assert spacing(prices) == {DAY * 1000}
    assert {t % (DAY * 1000) for t, _ in prices} == {0}
    assert len(prices) == days


def test_one_day_ending_now_is_five_minutely(coingecko):
    prices = history(coingecko, from_s=NOW_S - DAY, to_s=NOW_S).json()["prices"]
    assert spacing(prices) == {300_000}
    assert len(prices) == 288
    assert prices[-1][0] <= NOW_S * 1000


@pytest.mark.parametrize("hours", [1, 24])
def test_up_to_a_day_in_the_past_is_hourly(coingecko, hours):
    to_s = NOW_S - 10 * DAY
    prices = history(coingecko, from_s=to_s - hours * 3600, to_s=to_s).json()["prices"]
    assert len(prices) == hours
    assert spacing(prices) <= {HOUR_MS}


def test_points_never_pass_now(coingecko):
    prices = history(coingecko, from_s=NOW_S - 3 * DAY, to_s=NOW_S + 5 * DAY).json()["prices"]
    assert prices[-1][0] <= NOW_S * 1000 < prices[-1][0] + HOUR_MS


@pytest.mark.parametrize("shift", [0, 5 * 3600, 11 * DAY])
def test_overlapping_requests_agree_on_every_shared_point(coingecko, shift):
    to_s = NOW_S - 20 * DAY
    first = history(coingecko, from_s=to_s - 30 * DAY, to_s=to_s).json()
    second = history(coingecko, from_s=to_s - 30 * DAY + shift, to_s=to_s + shift).json()
    for metric in first:
        one, two = dict(map(tuple, first[metric])), dict(map(tuple, second[metric]))
        shared = one.keys() & two.keys()
        assert len(shared) == 30 * 24 - shift // 3600
        assert {t: one[t] for t in shared} == {t: two[t] for t in shared}


def test_the_answer_is_what_points_says(coingecko):
    from_s, to_s = NOW_S - 40 * DAY, NOW_S - 10 * DAY
    answer = history(coingecko, "ethereum", from_s, to_s).json()
    assert answer == coingecko.history.points("ethereum", from_s, to_s)
    assert {p for _, p in answer["prices"]} != {answer["prices"][0][1]}  # prices move


@pytest.mark.parametrize(("from_s", "to_s"), [(NOW_S - 5 * DAY, NOW_S - 6 * DAY), (NOW_S, NOW_S)])
def test_an_empty_range_answers_empty_lists(coingecko, from_s, to_s):
    answer = history(coingecko, from_s=from_s, to_s=to_s)
    assert answer.status_code == 200
    assert answer.json() == {"prices": [], "market_caps": [], "total_volumes": []}


# -- the demo plan's 365 days -----------------------------------------------------------------


@pytest.mark.parametrize("days_back", [366, 1000])
def test_a_range_older_than_365_days_is_refused_as_coingecko_does(coingecko, days_back):
    answer = history(coingecko, from_s=NOW_S - days_back * DAY, to_s=NOW_S - 300 * DAY)
    assert answer.status_code == 401
    status = answer.json()["error"]["status"]
    assert status["error_code"] == 10012
    assert status["error_message"] == DEMO_RANGE_MESSAGE
    assert "past 365 days" in status["error_message"]
    assert datetime.fromisoformat(status["timestamp"].replace("Z", "+00:00")) == BASE_TIME


@pytest.mark.parametrize("days_back", [364, 365])
def test_the_past_365_days_are_served(coingecko, days_back):
    answer = history(coingecko, from_s=NOW_S - days_back * DAY, to_s=NOW_S)
    assert answer.status_code == 200
    assert len(answer.json()["prices"]) == days_back


def test_without_the_demo_limit_older_ranges_are_served(coingecko):
    coingecko.history.days_limit = None
    answer = history(coingecko, from_s=NOW_S - 800 * DAY, to_s=NOW_S - 700 * DAY)
    assert answer.status_code == 200
    assert len(answer.json()["prices"]) == 100


def test_the_limit_follows_the_imitations_now(coingecko):
    coingecko.history.now = BASE_TIME - timedelta(days=400)
    old = (BASE_TIME - timedelta(days=700)).timestamp()
    assert history(coingecko, from_s=old, to_s=old + 30 * DAY).status_code == 200
    assert history(coingecko, from_s=old - 100 * DAY, to_s=old).status_code == 401


# -- errors, faults and bad answers -----------------------------------------------------------


def test_an_unknown_coin_is_not_found(coingecko):
    answer = history(coingecko, "no-such-coin", NOW_S - DAY * 3, NOW_S)
    assert answer.status_code == 404
    assert answer.json() == {"error": "coin not found"}


@pytest.mark.parametrize(
    "query",
    [
        {"from_s": None, "to_s": NOW_S},
        {"from_s": NOW_S - DAY, "to_s": None},
        {"from_s": "yesterday", "to_s": NOW_S},
        {"from_s": NOW_S - DAY, "to_s": NOW_S, "vs_currency": "eur"},
    ],
)
def test_missing_or_unreadable_arguments_are_a_bad_request(coingecko, query):
    answer = history(coingecko, **query)
    assert answer.status_code == 400
    assert "error" in answer.json()


def test_history_faults_are_their_own_and_leave_markets_faults_alone(coingecko):
    coingecko.fail_next(Fault(503))
    coingecko.history.fail_next(Fault(429, headers={"Retry-After": "2"}))
    refused = history(coingecko, from_s=NOW_S - 3 * DAY, to_s=NOW_S)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"
    assert history(coingecko, from_s=NOW_S - 3 * DAY, to_s=NOW_S).status_code == 200
    markets = requests.get(coingecko.url, params={"page": 1, "per_page": 10}, timeout=5)
    assert markets.status_code == 503
    markets = requests.get(coingecko.url, params={"page": 1, "per_page": 10}, timeout=5)
    assert markets.status_code == 200 and len(markets.json()) == 5


def test_markets_faults_are_not_consumed_by_history(coingecko):
    coingecko.fail_page(1, Fault(500))
    assert history(coingecko, from_s=NOW_S - 3 * DAY, to_s=NOW_S).status_code == 200
    markets = requests.get(coingecko.url, params={"page": 1, "per_page": 10}, timeout=5)
    assert markets.status_code == 500


def test_a_coin_fault_stays_until_cleared(coingecko):
    coingecko.history.fail_coin("ethereum", Fault(502))
    for _ in range(2):
        assert history(coingecko, "ethereum", NOW_S - 3 * DAY, NOW_S).status_code == 502
    assert history(coingecko, "bitcoin", NOW_S - 3 * DAY, NOW_S).status_code == 200
    coingecko.history.fail_coin("ethereum", None)
    assert history(coingecko, "ethereum", NOW_S - 3 * DAY, NOW_S).status_code == 200


def test_a_slow_answer_is_still_the_answer(coingecko):
    coingecko.history.fail_next(Fault(delay=0.3))
    answer = history(coingecko, from_s=NOW_S - 3 * DAY, to_s=NOW_S)
    assert answer.status_code == 200 and len(answer.json()["prices"]) == 72


@pytest.mark.parametrize(
    "answer",
    [
        '{"prices": [[1766000000000, 87000.5], [1766003600000, 8',
        {"prices": [[1766000000000, None]], "market_caps": None, "total_volumes": []},
        {"prices": [[1766003600000, "87000.5"], [1766000000000, "lots"]]},
        {"prices": [[1766000000000, 1.0, 2.0], [1766003600000]]},
    ],
    ids=["truncated", "nulls", "text-and-out-of-order", "wrong-arity"],
)
def test_a_set_answer_is_served_verbatim_for_that_coin_only(coingecko, answer):
    coingecko.history.set_answer("solana", answer)
    served = history(coingecko, "solana", NOW_S - 3 * DAY, NOW_S)
    assert served.status_code == 200
    assert served.text == (answer if isinstance(answer, str) else json.dumps(answer))
    assert history(coingecko, "bitcoin", NOW_S - 3 * DAY, NOW_S).json()["prices"]
    coingecko.history.set_answer("solana", None)
    assert len(history(coingecko, "solana", NOW_S - 3 * DAY, NOW_S).json()["prices"]) == 72


def test_history_requests_are_logged_with_their_query(coingecko):
    history(coingecko, "bitcoin", NOW_S - 3 * DAY, NOW_S)
    history(coingecko, "ethereum", NOW_S - 3 * DAY, NOW_S)
    requests.get(coingecko.url, params={"page": 1}, timeout=5)
    logged = coingecko.history.requests()
    assert [r.path.split("/")[4] for r in logged] == ["bitcoin", "ethereum"]
    assert logged[0].query == {
        "vs_currency": "usd",
        "from": str(NOW_S - 3 * DAY),
        "to": str(NOW_S),
    }
    assert [r.status for r in coingecko.history.requests("ethereum")] == [200]
    assert len(coingecko.page_requests()) == 1


def test_daily_points_fall_on_utc_midnight(coingecko):
    prices = history(coingecko, from_s=NOW_S - 120 * DAY, to_s=NOW_S).json()["prices"]
    moments = [datetime.fromtimestamp(t / 1000, UTC) for t, _ in prices]
    assert {(m.hour, m.minute, m.second, m.microsecond) for m in moments} == {(0, 0, 0, 0)}
