"""Real HTTP servers on loopback that imitate the public REST endpoints of Kraken and Bitstamp.

Each imitation answers exactly the requests that ccxt 4.5.90 makes for ``load_markets``,
``fetch_tickers`` and ``fetch_ohlcv``, records every request it receives, and can be told to move
prices, to serve other candles, or to misbehave:

    with KrakenImitation() as kraken:                             # or BitstampImitation()
        exchange = ccxt.kraken({"rateLimit": 1})
        exchange.urls["api"] = kraken.api_overrides()              # every group, same paths
        kraken.set_price("BTC/USD", 87500.1)                       # the next tickers
        kraken.set_candles("BTC/USD", [(opened_s, o, h, l, c, v)]) # else candle() per hour
        kraken.patch_ticker("SOL/USD", c=[None, "1"])              # raw fields: nulls, text
        kraken.unlist("SOL/USD")                                   # ticker of an unknown market
        kraken.fail_next(Fault(429))                               # the next request only
        kraken.fail_path("OHLC", Fault(503))                       # every OHLC, till cleared
        kraken.fail_next(Fault(truncate=True))                     # the usual answer, cut short
        kraken.fail_next(Fault(delay=0.6))                         # slow, then the usual answer
        kraken.fail_next(kraken_error("EAPI:Rate limit exceeded")) # Kraken's own error shape
        kraken.requests                                            # the log: path, query, status

A path fault matches requests whose path ends with the given text. Prices, candles and tickers
are deterministic; the imitation's clock is ``now`` (default ``NOW``), not the wall clock, and
candles run hourly up to the current hour (``candle_hours`` of them, 1200 by default).

What ccxt 4.5.90 does (read from ``ccxt/kraken.py``, ``ccxt/bitstamp.py`` and
``ccxt/base/exchange.py``; the tests in ``tests/test_exchange_imitation.py`` hold each fact):

URL groups (``urls["api"]``) and the requests made
    kraken: ``public``, ``private`` (``https://api.kraken.com``) and ``zendesk``
    (``https://kraken.zendesk.com/api/v2/help_center/en-us/articles``). Public paths are
    ``/0/public/<Method>``.
      - ``load_markets()``: 2 calls, ``GET /0/public/Assets`` (``fetch_currencies``; turns ``XXBT``
        into ``BTC`` and ``ZUSD`` into ``USD`` through the assets' ``altname``), then
        ``GET /0/public/AssetPairs``. Market ids are Kraken's pair keys (``XXBTZUSD``); symbols
        are ``BTC/USD``; ``active`` is ``status == "online"``.
      - ``fetch_tickers()``: 1 call, ``GET /0/public/Ticker`` with no ``pair`` (all pairs), or
        ``pair=ID,ID`` for the active markets among the given symbols. A Kraken ticker carries no
        time: ccxt's ``timestamp`` is ``None``. ``last`` is ``c[0]``, ``baseVolume`` is ``v[1]``
        (24 h), ``quoteVolume`` is ``v[1] * p[1]``.
      - ``fetch_ohlcv(symbol, "1h", since)``: 1 call, ``GET /0/public/OHLC?pair=ID&interval=60``
        and ``since = since/1000 - 3600`` (one interval earlier, since Kraken serves candles
        strictly after ``since``). Kraken serves only the 720 newest candles, whatever ``since``
        is, and always the current, uncommitted candle last. ccxt drops candles before ``since``
        and keeps ``[time, open, high, low, close, volume]`` (no vwap, no count).
    bitstamp: ``public`` and ``private`` (``https://www.bitstamp.net/api``). Paths are
    ``/api/v2/<path>/``, with the trailing slash.
      - ``load_markets()``: 1 call, ``GET /api/v2/markets/``, shared by ``fetch_currencies`` and
        ``fetch_markets`` through a cache that expires after 1000 ms: a markets answer slower than
        a second costs 2 calls. Every market needs ``description`` ("Base / Quote") and
        ``minimum_order_value``, or the whole load fails with ``ExchangeError``. Market ids are
        ``market_symbol`` (``btcusd``); a ``PERPETUAL`` market becomes ``BTC/USD:USD``, a swap.
      - ``fetch_tickers()``: 1 call, ``GET /api/v2/ticker/`` (all markets; ``symbols`` only
        filters afterwards). Each ticker names its market by ``pair`` (``BTC/USD``); its
        ``timestamp`` is in seconds and becomes milliseconds.
      - ``fetch_ohlcv(symbol, "1h", since)``: 1 call,
        ``GET /api/v2/ohlc/<id>/?step=3600&limit=1000&start=S&end=S+3600*1000-1`` (``limit`` is
        at most 1000; with no ``since``: ``step`` and ``limit=1000`` only).

Rate limiting and retries
    ``enableRateLimit`` is on by default: before each call ccxt sleeps until ``rateLimit * cost``
    ms have passed since the previous one (kraken: ``rateLimit`` 1000, OHLC costs 1.2; bitstamp:
    ``rateLimit`` 75, every cost 1). ccxt retries nothing by default: ``options
    ["maxRetriesOnFailure"]`` (0) retries errors derived from ``OperationFailed``
    (``NetworkError`` and its children), ``options["maxRetriesOnFailureDelay"]`` ms apart.

What each fault becomes (``ccxt.base.errors``)
    - A status with a non-JSON body (``Fault(status)``: what a proxy or CDN sends) maps by status:
      429 -> ``RateLimitExceeded``; 500, 502, 503, 520, 404 -> ``ExchangeNotAvailable``;
      504 -> ``RequestTimeout``. All are ``NetworkError``s, which ``maxRetriesOnFailure`` retries.
    - A JSON error body is read first, whatever the status. kraken answers its own errors with
      status 200 (``kraken_error()``): ``EAPI:Rate limit exceeded`` and ``EGeneral:Too many
      requests`` -> ``DDoSProtection``, ``EService:Unavailable`` -> ``ExchangeNotAvailable``,
      ``EQuery:Unknown asset`` -> ``BadSymbol``, but an unknown pair, ``EQuery:Unknown asset
      pair``, is not in ccxt's map and is a plain ``ExchangeError``. bitstamp
      (``bitstamp_error()``): any ``{"status": "error"}`` or ``{"error": ...}`` body is a plain
      ``ExchangeError``, even with status 429 or 503, so ccxt never retries it.
    - An answer slower than ``exchange.timeout`` (ms) -> ``RequestTimeout``.
    - Truncated JSON with status 200 raises no ccxt error: ccxt cannot parse it, hands the text
      on, and every reader takes "not a dict/list" for empty. ``load_markets()`` ends with no
      markets when the pairs answer is cut (a cut kraken ``Assets`` answer only loses currency
      precisions), kraken's ``fetch_tickers()`` with ``{}``, ``fetch_ohlcv()`` with ``[]``, all
      silently. bitstamp's ``fetch_tickers()`` fails outside ccxt's errors, with
      ``AttributeError``. A caller must treat an empty answer as suspect, and catch more than
      ``ccxt.BaseError``.
    - One ticker with a non-numeric volume or vwap fails the whole ``fetch_tickers()`` with
      ``ValueError`` (ccxt's ``Precise`` computes ``quoteVolume``); a null ``last`` is ``None``.
    - A bitstamp market missing ``description`` or ``minimum_order_value`` fails the whole
      ``load_markets()`` with ``ExchangeError``.

Keeping tests offline
    ccxt ignores ``HTTP(S)_PROXY`` (its ``requests`` session has ``trust_env = False`` unless
    ``requests_trust_env`` is set), so a dead proxy in the environment does not stop it. The
    tests instead refuse every name lookup and connection that is not to loopback, from an
    audit hook, and check that each request reached the imitation's log.

Run it alone with ``python -m tests.exchange_imitation kraken``.
"""

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.coingecko_imitation import Faults, QuietServer, RecordedRequest, record_request

NOW = datetime(2025, 12, 27, 10, 46, 21, tzinfo=UTC)
HOUR = 3600
CANDLE_HOURS = 1200
KRAKEN_OHLC_LIMIT = 720
BITSTAMP_OHLC_LIMIT = 1000

# The real groups of ``urls["api"]`` in ccxt 4.5.90; tests check them against ccxt itself.
URL_GROUPS = {
    "kraken": {
        "public": "https://api.kraken.com",
        "private": "https://api.kraken.com",
        "zendesk": "https://kraken.zendesk.com/api/v2/help_center/en-us/articles",
    },
    "bitstamp": {
        "public": "https://www.bitstamp.net/api",
        "private": "https://www.bitstamp.net/api",
    },
}

# Unified symbol -> (price, 24 h base volume). USDT and USDC markets sit a little off USD.
DEFAULT_PRICES = {
    "BTC/USD": (87387.1, 1523.40561),
    "ETH/USD": (2922.48, 20417.3301),
    "SOL/USD": (121.74, 188054.21),
    "BTC/USDT": (87401.3, 301.77524),
    "BTC/USDC": (87379.9, 87.10032),
}


def api_overrides(exchange_id: str, root: str) -> dict[str, str]:
    """Return ``urls["api"]`` for ``exchange_id`` with every group's host replaced by ``root``.

    Each group keeps its real path, so ccxt's own ``sign()`` builds the same paths it would send
    to the exchange.
    """
    return {group: root + urlsplit(url).path for group, url in URL_GROUPS[exchange_id].items()}


def candle(symbol: str, opened: int) -> tuple[float, float, float, float, float]:
    """Return the deterministic ``(open, high, low, close, volume)`` of one hourly candle."""
    price, volume = DEFAULT_PRICES.get(symbol, (1.0, 1.0))
    step = (opened // HOUR) % 24
    open_ = round(price * (1 + (step - 12) / 1000), 2)
    close = round(price * (1 + (step - 11) / 1000), 2)
    high = round(max(open_, close) * 1.002, 2)
    low = round(min(open_, close) * 0.998, 2)
    return open_, high, low, close, round(volume / 24 * (1 + step / 100), 8)


@dataclass(frozen=True)
class Fault:
    """One misbehaving answer, after ``delay`` seconds.

    ``status=200`` with no ``body`` serves the usual answer (slow, with ``delay``; cut in half
    with ``truncate``); another status with no ``body`` sends a small HTML page, as a proxy or
    CDN in front of an exchange does. ``kraken_error()`` and ``bitstamp_error()`` build the
    exchanges' own error answers.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | None = None
    content_type: str = "application/json"
    delay: float = 0.0
    truncate: bool = False


def kraken_error(message: str, status: int = 200) -> Fault:
    """Return Kraken's own error answer: ``{"error": [message]}``, with status 200 as Kraken."""
    return Fault(status, body=json.dumps({"error": [message]}))


def bitstamp_error(reason: str, status: int = 400, code: str = "API0001") -> Fault:
    """Return Bitstamp's own error answer: ``{"status": "error", "reason": ..., "code": ...}``."""
    return Fault(status, body=json.dumps({"status": "error", "reason": reason, "code": code}))


@dataclass
class Market:
    """One spot market as an exchange lists it, and its ticker's price and volume."""

    symbol: str
    id: str
    price: float
    volume: float
    info: dict
    candles: list[tuple] | None = None  # ``None``: ``candle()`` for the hours up to ``now``
    ticker_patch: dict = field(default_factory=dict)  # fields that replace the ticker's own
    listed: bool = True  # ``False``: in the tickers, but missing from the markets answer


class ExchangeImitation:
    """Serve one exchange's public endpoints on 127.0.0.1 and a free port."""

    exchange_id = ""

    def __init__(self, port: int = 0, now: datetime = NOW, candle_hours: int = CANDLE_HOURS):
        self.now = now
        self.candle_hours = candle_hours
        self.markets: dict[str, Market] = {m.symbol: m for m in self.default_markets()}
        self.requests: list[RecordedRequest] = []
        self.lock = threading.Lock()
        self.faults = Faults(self.lock, matches=str.endswith)
        self.server = QuietServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- set-up -------------------------------------------------------------------------------

    @property
    def root(self) -> str:
        """Return ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def api_overrides(self) -> dict[str, str]:
        """Return the dict to assign to the ccxt exchange's ``urls["api"]``."""
        return api_overrides(self.exchange_id, self.root)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def default_markets(self) -> list[Market]:
        raise NotImplementedError

    def set_price(self, symbol: str, price: float, volume: float | None = None) -> None:
        """Change a market's last price (and volume) in the next tickers.

        Kraken's tickers round the price to the pair's ``pair_decimals``.
        """
        with self.lock:
            market = self.markets[symbol]
            market.price = price
            if volume is not None:
                market.volume = volume

    def patch_ticker(self, symbol: str, **fields) -> None:
        """Replace fields of ``symbol``'s ticker with raw values (nulls, text, anything)."""
        with self.lock:
            self.markets[symbol].ticker_patch.update(fields)

    def unlist(self, symbol: str) -> None:
        """Leave ``symbol`` out of the markets answer while its ticker is still served."""
        with self.lock:
            self.markets[symbol].listed = False

    def set_candles(self, symbol: str, candles: list[tuple]) -> None:
        """Serve ``(opened_seconds, open, high, low, close, volume)`` candles for ``symbol``."""
        with self.lock:
            self.markets[symbol].candles = sorted(candles)

    def candles(self, symbol: str) -> list[tuple]:
        """Return every hourly candle of ``symbol``, oldest first, the current hour last."""
        market = self.markets[symbol]
        if market.candles is not None:
            return list(market.candles)
        current = int(self.now.timestamp()) // HOUR * HOUR
        first = current - (self.candle_hours - 1) * HOUR
        return [(t, *candle(symbol, t)) for t in range(first, current + 1, HOUR)]

    # -- faults and the log -------------------------------------------------------------------

    def fail_next(self, *faults: Fault) -> None:
        """Answer the next requests, whatever their path, with ``faults``, one each, in order."""
        self.faults.queue(*faults)

    def fail_path(self, suffix: str, fault: Fault | None) -> None:
        """Answer every request whose path ends with ``suffix`` with ``fault``; ``None`` clears."""
        self.faults.keep(suffix, fault)

    def clear_faults(self) -> None:
        """Drop every queued and per-path fault."""
        self.faults.clear()

    def requests_to(self, suffix: str) -> list[RecordedRequest]:
        """Return the requests whose path ends with ``suffix``."""
        return [r for r in self.requests if r.path.endswith(suffix)]

    # -- answers ------------------------------------------------------------------------------

    def route(self, path: str, query: dict[str, str]) -> tuple[int, object]:
        """Return status and JSON-ready answer for one request."""
        raise NotImplementedError

    def respond(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Return status, headers and body for one request, applying any fault."""
        fault = self.faults.take(path)
        if fault is not None:
            time.sleep(fault.delay)
        headers = {"Content-Type": "application/json"}
        if fault is None or (fault.status == 200 and fault.body is None):
            with self.lock:
                status, answer = self.route(path, query)
            body = json.dumps(answer).encode()
            if fault is not None and fault.truncate:
                body = body[: len(body) // 2]
            return status, {**headers, **(fault.headers if fault else {})}, body
        body, content_type = fault.body, fault.content_type
        if body is None:  # what a proxy or CDN in front of the exchange sends
            reason = HTTPStatus(fault.status).phrase if fault.status in set(HTTPStatus) else ""
            body = f"<html><body><h1>{fault.status} {reason}</h1></body></html>"
            content_type = "text/html"
        if isinstance(body, str):
            body = body.encode()
        if fault.truncate:
            body = body[: len(body) // 2]
        return fault.status, {"Content-Type": content_type, **fault.headers}, body

    def _handler(self):
        imitation = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts, query, recorded = record_request(imitation, self)
                status, headers, body = imitation.respond(parts.path, query)
                recorded.status = status
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # keep test output quiet
                pass

        return Handler


# -- Kraken -------------------------------------------------------------------------------------

KRAKEN_ASSETS = {
    "XXBT": {"altname": "XBT", "decimals": 10, "display_decimals": 5, "collateral_value": 1.0},
    "XETH": {"altname": "ETH", "decimals": 10, "display_decimals": 5, "collateral_value": 1.0},
    "SOL": {"altname": "SOL", "decimals": 10, "display_decimals": 5, "collateral_value": 0.9},
    "ZUSD": {"altname": "USD", "decimals": 4, "display_decimals": 2, "collateral_value": 1.0},
    "USDT": {"altname": "USDT", "decimals": 8, "display_decimals": 4, "collateral_value": 1.0},
    "USDC": {"altname": "USDC", "decimals": 8, "display_decimals": 4, "collateral_value": 1.0},
}
# symbol -> (pair id, altname, wsname, base id, quote id, pair_decimals, ordermin)
KRAKEN_PAIRS = {
    "BTC/USD": ("XXBTZUSD", "XBTUSD", "XBT/USD", "XXBT", "ZUSD", 1, "0.00005"),
    "ETH/USD": ("XETHZUSD", "ETHUSD", "ETH/USD", "XETH", "ZUSD", 2, "0.002"),
    "SOL/USD": ("SOLUSD", "SOLUSD", "SOL/USD", "SOL", "ZUSD", 2, "0.02"),
    "BTC/USDT": ("XBTUSDT", "XBTUSDT", "XBT/USDT", "XXBT", "USDT", 1, "0.00005"),
    "BTC/USDC": ("XBTUSDC", "XBTUSDC", "XBT/USDC", "XXBT", "USDC", 2, "0.00005"),
}


def kraken_pair_info(symbol: str) -> dict:
    """Return one ``AssetPairs`` entry shaped like Kraken's."""
    pair_id, altname, wsname, base, quote, decimals, ordermin = KRAKEN_PAIRS[symbol]
    taker = [[0, 0.4], [10000, 0.35], [50000, 0.24], [100000, 0.22], [250000, 0.2]]
    maker = [[0, 0.25], [10000, 0.2], [50000, 0.14], [100000, 0.12], [250000, 0.1]]
    return {
        "altname": altname,
        "wsname": wsname,
        "aclass_base": "currency",
        "base": base,
        "aclass_quote": "currency",
        "quote": quote,
        "lot": "unit",
        "cost_decimals": 5,
        "pair_decimals": decimals,
        "lot_decimals": 8,
        "lot_multiplier": 1,
        "leverage_buy": [2, 3] if quote == "ZUSD" else [],
        "leverage_sell": [2, 3] if quote == "ZUSD" else [],
        "fees": taker,
        "fees_maker": maker,
        "fee_volume_currency": "ZUSD",
        "margin_call": 80,
        "margin_stop": 40,
        "ordermin": ordermin,
        "costmin": "0.5",
        "tick_size": str(10**-decimals) if decimals else "1",
        "status": "online",
        "long_position_limit": 250,
        "short_position_limit": 200,
    }


class KrakenImitation(ExchangeImitation):
    """Kraken's ``/0/public/{Assets,AssetPairs,Ticker,OHLC}``."""

    exchange_id = "kraken"

    def default_markets(self) -> list[Market]:
        return [
            Market(symbol, KRAKEN_PAIRS[symbol][0], price, volume, kraken_pair_info(symbol))
            for symbol, (price, volume) in DEFAULT_PRICES.items()
        ]

    def by_id(self, pair: str) -> Market | None:
        """Find a market by pair id or altname, as Kraken accepts both."""
        for market in self.markets.values():
            if pair in (market.id, market.info["altname"]):
                return market
        return None

    def route(self, path: str, query: dict[str, str]) -> tuple[int, object]:
        if path == "/0/public/Assets":
            assets = {
                k: {"aclass": "currency", **v, "status": "enabled"}
                for k, v in KRAKEN_ASSETS.items()
            }
            return 200, {"error": [], "result": assets}
        if path == "/0/public/AssetPairs":
            pairs = {m.id: m.info for m in self.markets.values() if m.listed}
            return 200, {"error": [], "result": pairs}
        if path == "/0/public/Ticker":
            if "pair" in query:
                chosen = [self.by_id(p) for p in query["pair"].split(",")]
                if None in chosen:
                    return 200, {"error": ["EQuery:Unknown asset pair"]}
            else:
                chosen = list(self.markets.values())
            return 200, {"error": [], "result": {m.id: self.ticker(m) for m in chosen}}
        if path == "/0/public/OHLC":
            market = self.by_id(query.get("pair", ""))
            if market is None:
                return 200, {"error": ["EQuery:Unknown asset pair"]}
            if query.get("interval", "1") != "60":
                return 200, {"error": ["EGeneral:Invalid arguments"]}
            return 200, {"error": [], "result": self.ohlc(market, int(query.get("since", 0)))}
        return 404, {"error": ["EGeneral:Unknown method"]}

    def ticker(self, market: Market) -> dict:
        """Return one ``Ticker`` entry: strings, and no time."""
        decimals = market.info["pair_decimals"]
        price = f"{market.price:.{decimals}f}"
        step = 10**-decimals
        return {
            "a": [f"{market.price + step:.{decimals}f}", "1", "1.000"],
            "b": [f"{market.price - step:.{decimals}f}", "2", "2.000"],
            "c": [price, "0.00120000"],
            "v": [f"{market.volume / 2:.8f}", f"{market.volume:.8f}"],
            "p": [price, price],
            "t": [10234, 23117],
            "l": [f"{market.price * 0.97:.{decimals}f}"] * 2,
            "h": [f"{market.price * 1.02:.{decimals}f}"] * 2,
            "o": f"{market.price * 0.99:.{decimals}f}",
            **market.ticker_patch,
        }

    def ohlc(self, market: Market, since: int) -> dict:
        """Return the 720 newest candles after ``since``, the current one always last."""
        candles = self.candles(market.symbol)[-KRAKEN_OHLC_LIMIT:]
        served = [c for c in candles[:-1] if c[0] > since] + candles[-1:]
        rows = [
            [t, f"{o}", f"{h}", f"{lo}", f"{c}", f"{(o + c) / 2}", f"{v:.8f}", 17]
            for t, o, h, lo, c, v in served
        ]
        last = candles[-2][0] if len(candles) > 1 else candles[-1][0]
        return {market.id: rows, "last": last}


# -- Bitstamp -----------------------------------------------------------------------------------

BITSTAMP_NAMES = {"BTC": "Bitcoin", "ETH": "Ether", "SOL": "Solana", "USD": "U.S. dollar"}
BITSTAMP_NAMES |= {"USDT": "Tether", "USDC": "USD Coin"}


def bitstamp_market_info(symbol: str, market_type: str = "SPOT") -> dict:
    """Return one ``markets/`` entry shaped like Bitstamp's."""
    base, quote = symbol.split("/")
    suffix = "-perp" if market_type == "PERPETUAL" else ""
    info = {
        "name": symbol + ("-PERP" if suffix else ""),
        "market_symbol": (base + quote).lower() + suffix,
        "base_currency": base,
        "base_decimals": 8,
        "counter_currency": quote,
        "counter_decimals": 0 if base == "BTC" else 2,
        "minimum_order_value": "10",
        "maximum_order_value": "500000.00000000",
        "minimum_order_amount": "0.00001000",
        "maximum_order_amount": "10.00000000",
        "trading": "Enabled",
        "instant_order_counter_decimals": 2,
        "instant_and_market_orders": "Enabled",
        "description": f"{BITSTAMP_NAMES[base]} / {BITSTAMP_NAMES[quote]}",
        "market_type": market_type,
    }
    if suffix:
        info |= {"payoff_type": "Linear", "contract_size": "1.00000000"}
        info["description"] += " Perpetual"
    return info


class BitstampImitation(ExchangeImitation):
    """Bitstamp's ``/api/v2/{markets,ticker,ohlc/<pair>}/``; also lists one perpetual market."""

    exchange_id = "bitstamp"

    def default_markets(self) -> list[Market]:
        markets = [
            Market(
                symbol,
                bitstamp_market_info(symbol)["market_symbol"],
                p,
                v,
                bitstamp_market_info(symbol),
            )
            for symbol, (p, v) in DEFAULT_PRICES.items()
        ]
        perp = bitstamp_market_info("BTC/USD", "PERPETUAL")
        markets.append(Market("BTC/USD:USD", perp["market_symbol"], 87390.0, 12.5, perp))
        return markets

    def spot(self) -> list[Market]:
        """Return the spot markets, those ``ticker/`` answers for."""
        return [m for m in self.markets.values() if m.info["market_type"] == "SPOT"]

    def route(self, path: str, query: dict[str, str]) -> tuple[int, object]:
        if path == "/api/v2/markets/":
            return 200, [m.info for m in self.markets.values() if m.listed]
        if path == "/api/v2/ticker/":
            return 200, [self.ticker(m) for m in self.spot()]
        if path.startswith("/api/v2/ohlc/") and path.endswith("/"):
            pair = path.removeprefix("/api/v2/ohlc/").removesuffix("/")
            market = next((m for m in self.markets.values() if m.id == pair), None)
            if market is None:
                return 404, {"status": "error", "reason": "Not found", "code": "API0001"}
            return self.ohlc(market, query)
        return 404, {"status": "error", "reason": "Not found", "code": "API0001"}

    def ticker(self, market: Market) -> dict:
        """Return one ``ticker/`` entry: strings, a time in seconds and the market's name."""
        price = market.price
        return {
            "timestamp": str(int(self.now.timestamp())),
            "open": f"{price * 0.99:.2f}",
            "high": f"{price * 1.02:.2f}",
            "low": f"{price * 0.97:.2f}",
            "last": f"{price}",
            "volume": f"{market.volume:.8f}",
            "vwap": f"{price}",
            "bid": f"{price - 1:.2f}",
            "ask": f"{price + 1:.2f}",
            "side": "0",
            "open_24": f"{price * 0.98:.2f}",
            "percent_change_24": "2.04",
            "market_type": "SPOT",
            "pair": market.info["name"],
            **market.ticker_patch,
        }

    def ohlc(self, market: Market, query: dict[str, str]) -> tuple[int, object]:
        """Serve candles in ``[start, end]``: the last ``limit`` when ``end`` is given."""
        limit = int(query.get("limit", BITSTAMP_OHLC_LIMIT))
        if query.get("step") != "3600" or not 1 <= limit <= BITSTAMP_OHLC_LIMIT:
            reason = {"__all__": ["Invalid step or limit."]}
            return 400, {"status": "error", "reason": reason, "code": "API0019"}
        candles = self.candles(market.symbol)
        start, end = int(query.get("start", 0)), query.get("end")
        chosen = [c for c in candles if c[0] >= start and (end is None or c[0] <= int(end))]
        chosen = chosen[-limit:] if end is not None or "start" not in query else chosen[:limit]
        rows = [
            {
                "timestamp": str(t),
                "open": f"{o}",
                "high": f"{h}",
                "low": f"{lo}",
                "close": f"{c}",
                "volume": f"{v:.8f}",
            }
            for t, o, h, lo, c, v in chosen
        ]
        return 200, {"data": {"pair": market.info["name"], "ohlc": rows}}


IMITATIONS = {"kraken": KrakenImitation, "bitstamp": BitstampImitation}


def main() -> None:
    """Serve one imitation until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("exchange", choices=sorted(IMITATIONS))
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    with IMITATIONS[args.exchange](port=args.port) as imitation:
        print(f"serving {args.exchange} at {imitation.api_overrides()}", flush=True)
        try:
            imitation.thread.join()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
