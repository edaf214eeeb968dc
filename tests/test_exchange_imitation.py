"""Real ccxt against the exchange imitations: what it asks, what it gets, and what faults become.

These tests pin the facts written in ``tests/exchange_imitation.py``'s docstring, so that a ccxt
upgrade that changes them fails here first.
"""

import socket
import sys
from urllib.parse import urlsplit

import ccxt
import pytest

from tests.exchange_imitation import (
    BITSTAMP_OHLC_LIMIT,
    HOUR,
    KRAKEN_OHLC_LIMIT,
    URL_GROUPS,
    BitstampImitation,
    Fault,
    KrakenImitation,
    bitstamp_error,
    kraken_error,
)

HOUR_MS = HOUR * 1000
SPOT_SYMBOLS = ["BTC/USD", "BTC/USDC", "BTC/USDT", "ETH/USD", "SOL/USD"]
IMITATIONS = {"kraken": KrakenImitation, "bitstamp": BitstampImitation}

LOOPBACK = {"127.0.0.1", "localhost", b"127.0.0.1", b"localhost"}


class InternetBlocked(RuntimeError):
    """A name lookup or connection to something other than loopback was attempted."""


# An audit hook sees every real name lookup and socket connect, whatever library makes it. While
# ``_guard["on"]`` it records them, and refuses any that is not to loopback by raising from the
# hook, which aborts the call. It is not an error an HTTP library would catch as a network error.
_guard = {"on": False, "seen": []}


def _audit(event: str, args: tuple) -> None:
    if not _guard["on"]:
        return
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    else:
        return
    _guard["seen"].append((event, host))
    if host not in LOOPBACK:
        raise InternetBlocked(f"{event} {host!r}")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def loopback_only():
    """Refuse, and record, every lookup and connection in a test that is not to loopback."""
    _guard["seen"] = []
    _guard["on"] = True
    try:
        yield _guard["seen"]
    finally:
        _guard["on"] = False


@pytest.fixture(params=sorted(IMITATIONS))
def imitation(request):
    """Each exchange's imitation, serving on loopback."""
    with IMITATIONS[request.param]() as running:
        yield running


def make_exchange(imitation, **config):
    """Return a real ccxt exchange pointed at ``imitation``, rate limited by a tiny budget."""
    exchange = getattr(ccxt, imitation.exchange_id)(
        {"enableRateLimit": True, "rateLimit": 1, "timeout": 3000, **config}
    )
    exchange.urls["api"] = imitation.api_overrides()
    return exchange


@pytest.fixture
def exchange(imitation):
    return make_exchange(imitation)


def paths(imitation) -> list[str]:
    return [r.path for r in imitation.requests]


# -- URLs and the way out ---------------------------------------------------------------------


@pytest.mark.parametrize("exchange_id", sorted(URL_GROUPS))
def test_the_url_groups_are_the_ones_ccxt_has(exchange_id):
    assert getattr(ccxt, exchange_id)().urls["api"] == URL_GROUPS[exchange_id]


def test_every_group_is_overridden_and_keeps_its_path(imitation):
    overrides = imitation.api_overrides()
    assert set(overrides) == set(URL_GROUPS[imitation.exchange_id])
    assert all(url.startswith(imitation.root) for url in overrides.values())
    if imitation.exchange_id == "bitstamp":
        assert overrides["public"] == imitation.root + "/api"
    else:
        assert overrides["public"] == imitation.root


def test_every_call_reaches_the_imitation_and_nothing_else(imitation, exchange, loopback_only):
    exchange.load_markets()
    exchange.fetch_tickers()
    exchange.fetch_ohlcv("BTC/USD", "1h")
    connects = {host for event, host in loopback_only if event == "socket.connect"}
    assert connects == {"127.0.0.1"}
    assert all(r.status == 200 for r in imitation.requests)
    assert len(imitation.requests) == (4 if imitation.exchange_id == "kraken" else 3)


def test_a_url_left_pointing_outside_is_refused_at_the_lookup(imitation, loopback_only):
    exchange = getattr(ccxt, imitation.exchange_id)({"rateLimit": 1, "timeout": 3000})
    with pytest.raises(InternetBlocked):
        exchange.load_markets()
    host = urlsplit(URL_GROUPS[imitation.exchange_id]["public"]).hostname
    assert loopback_only == [("socket.getaddrinfo", host)]
    assert imitation.requests == []


def test_ccxt_ignores_proxy_variables_unless_told(imitation, monkeypatch, loopback_only):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    exchange = getattr(ccxt, imitation.exchange_id)({"rateLimit": 1, "timeout": 3000})
    assert exchange.session.trust_env is False
    with pytest.raises(InternetBlocked):
        exchange.load_markets()
    told = getattr(ccxt, imitation.exchange_id)({"requests_trust_env": True, "timeout": 3000})
    with pytest.raises(ccxt.NetworkError):  # the dead proxy on loopback refuses the connection
        told.load_markets()
    assert loopback_only[-1] == ("socket.connect", "127.0.0.1")


# -- markets and tickers ----------------------------------------------------------------------


def test_kraken_markets_cost_two_calls_and_its_names_become_unified():
    with KrakenImitation() as kraken:
        markets = make_exchange(kraken).load_markets()
        assert paths(kraken) == ["/0/public/Assets", "/0/public/AssetPairs"]
    assert sorted(markets) == SPOT_SYMBOLS
    btc = markets["BTC/USD"]
    assert (btc["id"], btc["base"], btc["quote"], btc["baseId"]) == (
        "XXBTZUSD",
        "BTC",
        "USD",
        "BTC",
    )
    assert btc["info"]["base"] == "XXBT" and btc["active"] is True
    assert markets["BTC/USDT"]["id"] == "XBTUSDT" and markets["BTC/USDT"]["quote"] == "USDT"


def test_bitstamp_markets_cost_one_call_and_list_a_perpetual_as_a_swap():
    with BitstampImitation() as bitstamp:
        markets = make_exchange(bitstamp).load_markets()
        assert paths(bitstamp) == ["/api/v2/markets/"]
    assert sorted(markets) == sorted([*SPOT_SYMBOLS, "BTC/USD:USD"])
    assert markets["BTC/USD"]["id"] == "btcusd" and markets["BTC/USD"]["spot"] is True
    assert markets["BTC/USD:USD"]["swap"] is True and markets["BTC/USD:USD"]["id"] == "btcusd-perp"


def test_a_markets_answer_slower_than_a_second_costs_bitstamp_two_calls():
    with BitstampImitation() as bitstamp:
        bitstamp.fail_next(Fault(delay=1.1))
        make_exchange(bitstamp).load_markets()
        assert paths(bitstamp) == ["/api/v2/markets/", "/api/v2/markets/"]


def test_tickers_of_every_market_come_in_one_call(imitation, exchange):
    exchange.load_markets()
    imitation.set_price("ETH/USD", 3001.25, volume=12.5)
    tickers = exchange.fetch_tickers()
    assert len(imitation.requests) == (3 if imitation.exchange_id == "kraken" else 2)
    assert imitation.requests[-1].query == {}
    assert sorted(tickers) == SPOT_SYMBOLS
    assert tickers["ETH/USD"]["last"] == 3001.25
    assert tickers["ETH/USD"]["baseVolume"] == 12.5
    assert tickers["BTC/USDT"]["last"] == 87401.3


def test_only_bitstamp_tickers_carry_the_exchanges_time(imitation, exchange):
    tickers = exchange.fetch_tickers()
    stamps = {t["timestamp"] for t in tickers.values()}
    if imitation.exchange_id == "kraken":
        assert stamps == {None}
    else:
        assert stamps == {int(imitation.now.timestamp()) * 1000}


def test_kraken_asks_for_chosen_symbols_by_pair_id():
    with KrakenImitation() as kraken:
        tickers = make_exchange(kraken).fetch_tickers(["BTC/USD", "SOL/USD"])
        assert kraken.requests[-1].query == {"pair": "XXBTZUSD,SOLUSD"}
    assert sorted(tickers) == ["BTC/USD", "SOL/USD"]


def test_bitstamp_fetches_all_tickers_even_for_chosen_symbols():
    with BitstampImitation() as bitstamp:
        tickers = make_exchange(bitstamp).fetch_tickers(["BTC/USD", "SOL/USD"])
        assert bitstamp.requests[-1].path == "/api/v2/ticker/"
        assert bitstamp.requests[-1].query == {}
    assert sorted(tickers) == ["BTC/USD", "SOL/USD"]


# -- OHLCV ------------------------------------------------------------------------------------


def test_kraken_serves_only_its_720_newest_hourly_candles():
    with KrakenImitation() as kraken:
        exchange = make_exchange(kraken)
        newest = kraken.candles("BTC/USD")[-KRAKEN_OHLC_LIMIT:]
        long_ago = (newest[0][0] - 500 * HOUR) * 1000
        candles = exchange.fetch_ohlcv("BTC/USD", "1h", since=long_ago)
        assert kraken.requests[-1].query == {
            "pair": "XXBTZUSD",
            "interval": "60",
            "since": str(long_ago // 1000 - HOUR),
        }
    assert len(candles) == KRAKEN_OHLC_LIMIT
    assert candles[0][0] == newest[0][0] * 1000 > long_ago  # the gap is the caller's to see
    assert candles[-1] == [newest[-1][0] * 1000, *newest[-1][1:]]


def test_kraken_pages_by_since_and_ends_with_only_the_current_candle_dropped():
    with KrakenImitation() as kraken:
        exchange = make_exchange(kraken)
        newest = kraken.candles("BTC/USD")[-KRAKEN_OHLC_LIMIT:]
        since = newest[100][0] * 1000
        first = exchange.fetch_ohlcv("BTC/USD", "1h", since=since)
        then = exchange.fetch_ohlcv("BTC/USD", "1h", since=first[-1][0] + HOUR_MS)
        assert len(kraken.requests_to("/OHLC")) == 2
        # Kraken still sent the current candle; ccxt dropped it as older than ``since``.
        assert kraken.requests[-1].status == 200
    assert [c[0] for c in first] == [t * 1000 for t, *_ in newest[100:]]
    assert then == []


def test_bitstamp_pages_a_thousand_candles_at_a_time():
    with BitstampImitation(candle_hours=1200) as bitstamp:
        exchange = make_exchange(bitstamp)
        every = bitstamp.candles("BTC/USD")
        since = every[0][0] * 1000
        pages = []
        while True:
            page = exchange.fetch_ohlcv("BTC/USD", "1h", since=since)
            if not page:
                break
            pages.append(page)
            since = page[-1][0] + HOUR_MS
        start = every[0][0]
        assert bitstamp.requests_to("/ohlc/btcusd/")[0].query == {
            "step": "3600",
            "start": str(start),
            "end": str(start + HOUR * BITSTAMP_OHLC_LIMIT - 1),
            "limit": "1000",
        }
    assert [len(p) for p in pages] == [1000, 200]
    assert [c for p in pages for c in p] == [
        [t * 1000, o, h, lo, c, v] for t, o, h, lo, c, v in every
    ]


def test_bitstamp_without_since_serves_the_newest_thousand():
    with BitstampImitation() as bitstamp:
        candles = make_exchange(bitstamp).fetch_ohlcv("BTC/USD", "1h")
        assert bitstamp.requests[-1].query == {"step": "3600", "limit": "1000"}
        newest = bitstamp.candles("BTC/USD")[-1000:]
    assert [c[0] for c in candles] == [t * 1000 for t, *_ in newest]


def test_set_candles_are_served_exactly(imitation, exchange):
    start = int(imitation.now.timestamp()) // HOUR * HOUR - 2 * HOUR
    mine = [
        (start, 10.0, 12.5, 9.5, 11.0, 3.25),
        (start + HOUR, 11.0, 11.5, 10.0, 10.5, 1.0),
        (start + 2 * HOUR, 10.5, 10.75, 10.25, 10.5, 0.5),
    ]
    imitation.set_candles("ETH/USD", mine)
    candles = exchange.fetch_ohlcv("ETH/USD", "1h", since=start * 1000)
    assert candles == [[t * 1000, *rest] for t, *rest in mine]


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, ccxt.RateLimitExceeded),
        (500, ccxt.ExchangeNotAvailable),
        (502, ccxt.ExchangeNotAvailable),
        (503, ccxt.ExchangeNotAvailable),
        (520, ccxt.ExchangeNotAvailable),
        (504, ccxt.RequestTimeout),
        (404, ccxt.ExchangeNotAvailable),
    ],
)
def test_a_status_without_the_exchanges_error_body_maps_by_status(
    imitation, exchange, status, error
):
    imitation.fail_next(Fault(status))  # a small HTML page, as from a proxy or CDN
    with pytest.raises(error) as raised:
        exchange.load_markets()
    assert isinstance(raised.value, ccxt.NetworkError)
    assert imitation.requests[0].status == status


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("EAPI:Rate limit exceeded", ccxt.DDoSProtection),
        ("EGeneral:Too many requests", ccxt.DDoSProtection),
        ("EService:Unavailable", ccxt.ExchangeNotAvailable),
        ("EQuery:Unknown asset", ccxt.BadSymbol),
        ("EQuery:Unknown asset pair", ccxt.ExchangeError),  # Kraken's real words: not in ccxt's map
    ],
)
def test_kraken_errors_come_with_status_200_and_map_by_message(message, error):
    with KrakenImitation() as kraken:
        kraken.fail_next(kraken_error(message))
        with pytest.raises(error):
            make_exchange(kraken).fetch_tickers()


def test_kraken_answers_an_unknown_pair_with_a_plain_exchange_error():
    with KrakenImitation() as kraken:
        exchange = make_exchange(kraken)
        exchange.load_markets()
        with pytest.raises(ccxt.ExchangeError, match="EQuery:Unknown asset pair") as raised:
            exchange.publicGetOHLC({"pair": "NOSUCHPAIR", "interval": 60})
        assert type(raised.value) is ccxt.ExchangeError
        assert kraken.requests[-1].status == 200


def test_an_unknown_bitstamp_pair_is_a_404():
    with BitstampImitation() as bitstamp:
        exchange = make_exchange(bitstamp)
        with pytest.raises(ccxt.ExchangeError):
            exchange.publicGetOhlcPair({"pair": "nosuchpair", "step": 3600, "limit": 5})
        assert bitstamp.requests[-1].status == 404


@pytest.mark.parametrize("status", [200, 400, 429, 503])
def test_a_bitstamp_error_body_is_an_exchange_error_whatever_the_status(status):
    with BitstampImitation() as bitstamp:
        bitstamp.fail_next(bitstamp_error("Rate limit exceeded", status, "API0017"))
        with pytest.raises(ccxt.ExchangeError) as raised:
            make_exchange(bitstamp).load_markets()
    assert type(raised.value) is ccxt.ExchangeError  # not a NetworkError: ccxt never retries it


def test_ccxt_does_not_retry_an_error_the_exchange_worded():
    with BitstampImitation() as bitstamp:
        bitstamp.fail_next(bitstamp_error("Service unavailable", 503))
        exchange = make_exchange(bitstamp, options={"maxRetriesOnFailure": 3})
        with pytest.raises(ccxt.ExchangeError):
            exchange.load_markets()
        assert len(bitstamp.requests) == 1


def test_a_slow_answer_beyond_the_timeout_is_a_request_timeout(imitation):
    exchange = make_exchange(imitation, timeout=200)
    imitation.fail_next(Fault(delay=0.6))
    with pytest.raises(ccxt.RequestTimeout):
        exchange.load_markets()


def test_a_slow_answer_within_the_timeout_is_served(imitation, exchange):
    imitation.fail_next(Fault(delay=0.3))
    assert sorted(exchange.fetch_tickers()) == SPOT_SYMBOLS


def test_ccxt_retries_nothing_unless_told(imitation):
    imitation.fail_next(Fault(503))
    with pytest.raises(ccxt.ExchangeNotAvailable):
        make_exchange(imitation).fetch_tickers()
    first = len(imitation.requests)
    assert first == 1
    imitation.fail_next(Fault(503), Fault(429))
    exchange = make_exchange(imitation, options={"maxRetriesOnFailure": 2})
    tickers = exchange.fetch_tickers()
    assert sorted(tickers) == SPOT_SYMBOLS
    statuses = [r.status for r in imitation.requests[first:]]
    assert statuses[:3] == [503, 429, 200]


def test_a_path_fault_stays_until_cleared(imitation, exchange):
    exchange.load_markets()
    imitation.fail_path(
        "/ohlc/btcusd/" if imitation.exchange_id == "bitstamp" else "OHLC", Fault(503)
    )
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            exchange.fetch_ohlcv("BTC/USD", "1h")
    assert sorted(exchange.fetch_tickers()) == SPOT_SYMBOLS
    imitation.clear_faults()
    assert exchange.fetch_ohlcv("BTC/USD", "1h")


# Truncated JSON with status 200: no ccxt error, only emptiness (or worse).


def test_truncated_tickers_are_silently_empty_on_kraken():
    with KrakenImitation() as kraken:
        exchange = make_exchange(kraken)
        exchange.load_markets()
        kraken.fail_next(Fault(truncate=True))
        assert exchange.fetch_tickers() == {}


def test_truncated_tickers_break_bitstamp_outside_ccxts_errors():
    with BitstampImitation() as bitstamp:
        exchange = make_exchange(bitstamp)
        exchange.load_markets()
        bitstamp.fail_next(Fault(truncate=True))
        with pytest.raises(AttributeError):
            exchange.fetch_tickers()


def test_truncated_candles_are_silently_empty(imitation, exchange):
    exchange.load_markets()
    imitation.fail_next(Fault(truncate=True))
    assert exchange.fetch_ohlcv("BTC/USD", "1h") == []


def test_truncated_markets_load_silently_as_no_markets(imitation, exchange):
    pairs = "AssetPairs" if imitation.exchange_id == "kraken" else "/markets/"
    imitation.fail_path(pairs, Fault(truncate=True))
    assert exchange.load_markets() == {}
    assert all(r.status == 200 for r in imitation.requests)


def test_truncated_kraken_assets_still_give_markets():
    with KrakenImitation() as kraken:
        kraken.fail_next(Fault(truncate=True))
        markets = make_exchange(kraken).load_markets()
    assert sorted(markets) == SPOT_SYMBOLS


def test_a_bitstamp_market_without_a_description_fails_the_whole_load():
    with BitstampImitation() as bitstamp:
        del bitstamp.markets["SOL/USD"].info["description"]
        with pytest.raises(ccxt.ExchangeError, match="missing description"):
            make_exchange(bitstamp).load_markets()


# -- rate limiting ----------------------------------------------------------------------------


def test_the_rate_limits_are_ccxts():
    kraken, bitstamp = ccxt.kraken(), ccxt.bitstamp()
    assert (kraken.rateLimit, bitstamp.rateLimit) == (1000, 75)
    assert kraken.enableRateLimit and bitstamp.enableRateLimit
    assert kraken.api["public"]["get"]["OHLC"]["cost"] == 1.2
    assert bitstamp.api["public"]["get"]["ohlc/{pair}/"]["cost"] == 1


def test_ccxt_spaces_calls_by_rate_limit_times_cost():
    with KrakenImitation() as kraken:
        exchange = make_exchange(kraken, rateLimit=300)
        exchange.load_markets()
        exchange.fetch_ohlcv("BTC/USD", "1h")
        exchange.fetch_ohlcv("BTC/USD", "1h")
        at = [r.at for r in kraken.requests]
    gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
    # ccxt counts whole milliseconds from the moment it sent the previous request; the margin
    # allows for a request that reached the imitation late on a busy machine.
    assert gaps[0] >= 0.25  # Assets -> AssetPairs: cost 1, 300 ms
    assert gaps[2] >= 0.31  # OHLC -> OHLC: cost 1.2, 360 ms


def test_the_imitation_is_a_real_server_on_loopback(imitation):
    with socket.create_connection(("127.0.0.1", imitation.server.server_address[1])) as sock:
        sock.sendall(b"GET /nowhere HTTP/1.0\r\n\r\n")
        assert sock.recv(12).startswith(b"HTTP/1.0 404")


# -- bad input --------------------------------------------------------------------------------


def test_a_null_last_price_is_passed_on_as_none(imitation, exchange):
    exchange.load_markets()
    if imitation.exchange_id == "kraken":
        imitation.patch_ticker("SOL/USD", c=[None, "1"])
    else:
        imitation.patch_ticker("SOL/USD", last=None)
    tickers = exchange.fetch_tickers()
    assert tickers["SOL/USD"]["last"] is None
    assert tickers["ETH/USD"]["last"] == 2922.48


def test_one_non_numeric_volume_fails_every_ticker_outside_ccxts_errors(imitation, exchange):
    exchange.load_markets()
    if imitation.exchange_id == "kraken":
        imitation.patch_ticker("SOL/USD", v=["1", "lots"])
    else:
        imitation.patch_ticker("SOL/USD", volume="lots")
    with pytest.raises(ValueError, match="lots"):  # ccxt's Precise multiplies volume by vwap
        exchange.fetch_tickers()


def test_an_unlisted_market_still_has_a_ticker(imitation, exchange):
    imitation.unlist("SOL/USD")
    markets = exchange.load_markets()
    tickers = exchange.fetch_tickers()
    assert "SOL/USD" not in markets
    if imitation.exchange_id == "kraken":
        assert "SOLUSD" in tickers  # an unknown Kraken id stays the symbol
    else:
        assert "SOL/USD" in tickers  # Bitstamp names the pair itself
