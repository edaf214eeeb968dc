"""A real HTTP server on loopback that imitates CoinGecko's ``/coins/markets``.

It serves coins page by page, records every request it receives (headers, arrival time and the
status it was answered with) and can be told to move prices between runs, or to misbehave:

    imitation.fail_next(Fault(429, headers={"Retry-After": "1"}))  # the next request only
    imitation.fail_page(2, Fault(503))                             # page 2, until cleared
    imitation.fail_next(Fault(delay=0.6))                          # slow, then the page as usual

One-shot faults are consumed first in, first out by the next markets requests, whatever their page;
a page fault answers every request for that page until ``clear_faults()``. Run it alone with
``python -m tests.coingecko_imitation``.

It also serves history, ``/coins/{id}/market_chart/range``, with faults of its own
(``imitation.history``): see the History section near the end of this module.
"""

import argparse
import json
import operator
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MARKETS_PATH = "/api/v3/coins/markets"
BASE_TIME = datetime(2025, 12, 27, 10, 46, 21, 358000, tzinfo=UTC)
KNOWN_COINS = [
    ("bitcoin", "btc", "Bitcoin", 87387, 1744910741787, 31377869299),
    ("ethereum", "eth", "Ethereum", 2922.48, 352547418866, 13751868665),
    ("tether", "usdt", "Tether", 0.999512, 186786011203, 50257709985),
    ("ripple", "xrp", "XRP", 1.86, 112617423021, 2048390044),
    ("solana", "sol", "Solana", 121.74, 68214512308, 3170212488),
]


def iso(moment: datetime) -> str:
    """Format a time the way CoinGecko does: milliseconds and a Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_coin(coin_id, symbol, name, price, market_cap, volume, rank, updated=BASE_TIME) -> dict:
    """Return one coin object shaped like a real ``/coins/markets`` entry."""
    return {
        "id": coin_id,
        "symbol": symbol,
        "name": name,
        "image": f"https://example.invalid/{coin_id}.png",
        "current_price": price,
        "market_cap": market_cap,
        "market_cap_rank": rank,
        "fully_diluted_valuation": market_cap,
        "total_volume": volume,
        "high_24h": price,
        "low_24h": price,
        "price_change_24h": 0.0,
        "circulating_supply": 1000000.0,
        "max_supply": None,
        "roi": None,
        "last_updated": iso(updated),
    }


def make_coins(count: int) -> list[dict]:
    """Return ``count`` coins: the well-known ones first, then numbered test coins."""
    coins = [
        make_coin(*known, rank=rank) for rank, known in enumerate(KNOWN_COINS[:count], start=1)
    ]
    for rank in range(len(coins) + 1, count + 1):
        updated = BASE_TIME - timedelta(seconds=rank)
        coins.append(
            make_coin(
                f"test-coin-{rank}",
                f"tc{rank}",
                f"Test Coin {rank}",
                rank / 100,
                rank * 10**6,
                rank * 10**4,
                rank,
                updated,
            )
        )
    return coins


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that does not print a traceback when a client hangs up."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class RecordedRequest:
    """What the imitation received, when (``time.monotonic()``), and the status it answered."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float = 0.0
    status: int | None = None


@dataclass(frozen=True)
class Fault:
    """One misbehaving answer: a status, headers, a body and its type, after a delay.

    ``body=None`` with status 200 serves the page as usual (a slow but good answer, with
    ``delay``); with another status it sends a small CoinGecko-style JSON error.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | None = None
    content_type: str = "application/json"
    delay: float = 0.0


def fault_answer(fault: Fault) -> tuple[int, dict[str, str], bytes]:
    """Return status, headers and body of ``fault``: its own body, or a CoinGecko-style error."""
    body = fault.body
    if body is None:
        error = {"status": {"error_code": fault.status, "error_message": "imitated fault"}}
        body = json.dumps(error)
    if isinstance(body, str):
        body = body.encode()
    return fault.status, {"Content-Type": fault.content_type, **fault.headers}, body


def record_request(imitation, handler: BaseHTTPRequestHandler):
    """Log the request ``handler`` is serving on ``imitation``; return its parts, query, record."""
    parts = urlsplit(handler.path)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    headers = {k.lower(): v for k, v in handler.headers.items()}
    recorded = RecordedRequest(parts.path, query, headers, at=time.monotonic())
    with imitation.lock:
        imitation.requests.append(recorded)
    return parts, query, recorded


class Faults:
    """Faults queued for the next requests, one each, and faults kept for a key until cleared.

    ``matches(key, kept)`` says whether a request's key (a page, a path, a coin) takes a kept
    fault; by default the two are equal.
    """

    def __init__(self, lock: threading.Lock, matches=operator.eq):
        self.lock = lock
        self.matches = matches
        self.queued: deque = deque()
        self.kept: dict = {}

    def queue(self, *faults) -> None:
        """Answer the next requests with ``faults``, one each, in order."""
        with self.lock:
            self.queued.extend(faults)

    def keep(self, key, fault) -> None:
        """Answer every request for ``key`` with ``fault``; ``None`` lets it through again."""
        with self.lock:
            if fault is None:
                self.kept.pop(key, None)
            else:
                self.kept[key] = fault

    def clear(self) -> None:
        """Drop every queued and kept fault."""
        with self.lock:
            self.queued.clear()
            self.kept.clear()

    def take(self, key):
        """Return the fault for a request for ``key``: the next queued one, else a kept one."""
        with self.lock:
            if self.queued:
                return self.queued.popleft()
            return next((f for k, f in self.kept.items() if self.matches(key, k)), None)


class CoinGeckoImitation:
    """Serve a list of coins as CoinGecko would, on 127.0.0.1 and a free port."""

    def __init__(self, coins: list[dict] | None = None, port: int = 0):
        self.coins = coins if coins is not None else make_coins(len(KNOWN_COINS))
        self.requests: list[RecordedRequest] = []
        self.delay_seconds = 0.0
        self.lock = threading.Lock()
        self.faults = Faults(self.lock)
        self.history = MarketChartRange(self)  # /coins/{id}/market_chart/range, see below
        self.server = QuietServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """Return the markets URL to use as ``API_SOURCE_URL``."""
        return f"http://127.0.0.1:{self.server.server_address[1]}{MARKETS_PATH}"

    def __enter__(self) -> "CoinGeckoImitation":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def move_price(self, coin_id: str, price: float, seconds_later: int = 60) -> dict:
        """Change a coin's price and move its ``last_updated`` forward, as a new tick would."""
        with self.lock:
            coin = next(c for c in self.coins if c["id"] == coin_id)
            updated = datetime.fromisoformat(coin["last_updated"].replace("Z", "+00:00"))
            coin["current_price"] = price
            coin["last_updated"] = iso(updated + timedelta(seconds=seconds_later))
            return coin

    def page_requests(self) -> list[RecordedRequest]:
        """Return the requests made to the markets path."""
        return [r for r in self.requests if r.path == MARKETS_PATH]

    def fail_next(self, *faults: Fault) -> None:
        """Answer the next markets requests with ``faults``, one each, in order."""
        self.faults.queue(*faults)

    def fail_page(self, page: int, fault: Fault | None) -> None:
        """Answer every request for ``page`` with ``fault``; ``None`` lets the page through."""
        self.faults.keep(page, fault)

    def clear_faults(self) -> None:
        """Drop every queued and per-page fault."""
        self.faults.clear()

    def respond(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Return status, headers and body for one markets request, after any set delay."""
        time.sleep(self.delay_seconds)
        per_page = int(query.get("per_page", 100))
        page = int(query.get("page", 1))
        fault = self.faults.take(page)
        if fault is not None:
            time.sleep(fault.delay)
        if fault is None or (fault.status == 200 and fault.body is None):
            with self.lock:
                chunk = self.coins[(page - 1) * per_page : page * per_page]
                body = json.dumps(chunk).encode()
            headers = {"Content-Type": "application/json"}
            return 200, {**headers, **(fault.headers if fault else {})}, body
        return fault_answer(fault)

    def _handler(self):
        imitation = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts, query, recorded = record_request(imitation, self)
                if range_coin_id(parts.path) is not None:  # market_chart/range, see below
                    status, headers, body = imitation.history.respond(parts.path, query)
                elif parts.path != MARKETS_PATH:
                    status, headers, body = (
                        404,
                        {"Content-Type": "application/json"},
                        b'{"error":"not found"}',
                    )
                else:
                    status, headers, body = imitation.respond(query)
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


# ===============================================================================================
# History: ``/coins/{id}/market_chart/range?vs_currency=usd&from=<s>&to=<s>``.
#
# Answers ``{"prices": [[ms, value], ...], "market_caps": [...], "total_volumes": [...]}`` for the
# coins the imitation lists, with CoinGecko's automatic granularity (docs.coingecko.com,
# "Coin Historical Chart Data within Time Range by ID"):
#   - a range of up to 1 day that ends now: 5-minutely points;
#   - any other range of up to 90 days (1 day not ending now, 2 to 90 days): hourly points;
#   - over 90 days: daily points at 00:00 UTC.
# Points lie in ``[from, to]``, never after ``now``; hourly and 5-minutely points sit
# ``point_offset_ms`` after their slot, as CoinGecko's snapshots do (1704067241331 is 00:00:41.331).
# Every value is a function of the coin and the point's time, so overlapping requests agree.
#
# The demo plan serves only the past 365 days. A range starting earlier is refused with status 401
# and CoinGecko's error body (error_code 10012; the message as CoinGecko sends it, seen in
# SixPM-Software/waxtax#8 and ghostfolio/ghostfolio#3231). ``days_limit = None`` is a paid plan.
# An unknown coin answers 404 ``{"error": "coin not found"}``. Missing or unreadable ``from``,
# ``to`` or ``vs_currency`` answer 400 with ``{"error": ...}`` (the imitation's own wording).
#
#     imitation.history.url("bitcoin")                         # the endpoint for a coin
#     imitation.history.points("bitcoin", from_s, to_s)        # what a request would answer
#     imitation.history.fail_next(Fault(429))                  # the next history request only
#     imitation.history.fail_coin("ethereum", Fault(503))      # every request for a coin
#     imitation.history.set_answer("solana", {"prices": ...})  # serve this (dict or raw text)
# ===============================================================================================

RANGE_PATH_PREFIX = "/api/v3/coins/"
RANGE_PATH_SUFFIX = "/market_chart/range"
DAY_SECONDS = 86400
DEMO_DAYS_LIMIT = 365
DEMO_RANGE_MESSAGE = (
    "Your request exceeds the allowed time range. Public API users are limited to querying "
    "historical data within the past 365 days. Upgrade to a paid plan to enjoy full historical "
    "data access: https://www.coingecko.com/en/api/pricing. "
)


def range_coin_id(path: str) -> str | None:
    """Return the coin id of a ``market_chart/range`` path, or ``None`` for any other path."""
    if path.startswith(RANGE_PATH_PREFIX) and path.endswith(RANGE_PATH_SUFFIX):
        coin_id = path[len(RANGE_PATH_PREFIX) : -len(RANGE_PATH_SUFFIX)]
        if coin_id and "/" not in coin_id:
            return coin_id
    return None


def granularity_seconds(from_s: float, to_s: float, now_s: float) -> int:
    """Return the spacing of the points CoinGecko answers for ``[from_s, to_s]``."""
    span = to_s - from_s
    if span <= DAY_SECONDS and to_s >= now_s - 300:
        return 300
    if span <= 90 * DAY_SECONDS:
        return 3600
    return DAY_SECONDS


def history_values(coin: dict, moment_ms: int) -> tuple[float, float, float]:
    """Return ``(price, market_cap, total_volume)`` of ``coin`` at ``moment_ms``.

    Prices swing by up to 4.8 % around the coin's ``current_price`` in a 97-step cycle of
    5-minute slots; market cap follows price at a fixed supply; volume runs a 13-step cycle.
    """
    price = coin.get("current_price") or 1.0
    market_cap = coin.get("market_cap") or price * 1_000_000
    volume = coin.get("total_volume") or price * 10_000
    slot = moment_ms // 300_000
    factor = 1 + ((slot % 97) - 48) / 1000
    return (
        round(price * factor, 6),
        round(market_cap * factor, 2),
        round(volume * (1 + (slot % 13) / 100), 2),
    )


class MarketChartRange:
    """The state and answers of the imitation's ``market_chart/range`` endpoint."""

    def __init__(self, imitation: "CoinGeckoImitation"):
        self.imitation = imitation
        self.now = BASE_TIME
        self.days_limit: int | None = DEMO_DAYS_LIMIT
        self.point_offset_ms = 41_331
        self.faults = Faults(imitation.lock)
        self.answers: dict[str, dict | str] = {}

    def url(self, coin_id: str) -> str:
        """Return the endpoint's URL for ``coin_id`` (the same base as ``imitation.url``)."""
        port = self.imitation.server.server_address[1]
        return f"http://127.0.0.1:{port}{RANGE_PATH_PREFIX}{coin_id}{RANGE_PATH_SUFFIX}"

    def requests(self, coin_id: str | None = None) -> list[RecordedRequest]:
        """Return the history requests received, for one coin or all."""
        return [
            r
            for r in self.imitation.requests
            if range_coin_id(r.path) is not None
            and (coin_id is None or range_coin_id(r.path) == coin_id)
        ]

    def fail_next(self, *faults: Fault) -> None:
        """Answer the next history requests with ``faults``, one each, in order."""
        self.faults.queue(*faults)

    def fail_coin(self, coin_id: str, fault: Fault | None) -> None:
        """Answer every history request for ``coin_id`` with ``fault``; ``None`` lets it through."""
        self.faults.keep(coin_id, fault)

    def set_answer(self, coin_id: str, answer: dict | str | None) -> None:
        """Serve ``answer`` (JSON-ready, or raw text) for ``coin_id``; ``None`` restores points."""
        with self.imitation.lock:
            if answer is None:
                self.answers.pop(coin_id, None)
            else:
                self.answers[coin_id] = answer

    def clear_faults(self) -> None:
        """Drop every queued and per-coin history fault and every set answer."""
        self.faults.clear()
        with self.imitation.lock:
            self.answers.clear()

    def points(self, coin_id: str, from_s: float, to_s: float) -> dict[str, list[list]]:
        """Return the three lists a request for ``[from_s, to_s]`` answers."""
        coin = next(c for c in self.imitation.coins if c["id"] == coin_id)
        now_s = self.now.timestamp()
        step = granularity_seconds(from_s, to_s, now_s)
        offset_ms = 0 if step == DAY_SECONDS else self.point_offset_ms
        low_ms, high_ms = from_s * 1000, min(to_s, now_s) * 1000
        answer: dict[str, list[list]] = {"prices": [], "market_caps": [], "total_volumes": []}
        moment = int((low_ms - offset_ms) // (step * 1000)) * step * 1000 + offset_ms
        while moment <= high_ms:
            if moment >= low_ms:
                price, market_cap, volume = history_values(coin, moment)
                answer["prices"].append([moment, price])
                answer["market_caps"].append([moment, market_cap])
                answer["total_volumes"].append([moment, volume])
            moment += step * 1000
        return answer

    def respond(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Return status, headers and body for one history request."""
        coin_id = range_coin_id(path)
        fault = self.faults.take(coin_id)
        if fault is not None:
            time.sleep(fault.delay)
            if fault.status != 200 or fault.body is not None:
                return fault_answer(fault)
        status, answer = self._answer(coin_id, query)
        body = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        headers = {"Content-Type": "application/json", **(fault.headers if fault else {})}
        return status, headers, body

    def _answer(self, coin_id: str, query: dict[str, str]) -> tuple[int, dict | str]:
        with self.imitation.lock:
            if coin_id in self.answers:
                return 200, self.answers[coin_id]
            known = any(c["id"] == coin_id for c in self.imitation.coins)
        if not known:
            return 404, {"error": "coin not found"}
        if query.get("vs_currency") != "usd":
            return 400, {"error": "invalid vs_currency"}
        try:
            from_s, to_s = float(query["from"]), float(query["to"])
        except (KeyError, ValueError):
            return 400, {"error": "missing or invalid from/to"}
        limit = self.days_limit
        if limit is not None and from_s < self.now.timestamp() - limit * DAY_SECONDS:
            status = {"timestamp": iso(self.now), "error_code": 10012}
            return 401, {"error": {"status": {**status, "error_message": DEMO_RANGE_MESSAGE}}}
        with self.imitation.lock:
            return 200, self.points(coin_id, from_s, to_s)


def main() -> None:
    """Serve the imitation until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--coins", type=int, default=300)
    args = parser.parse_args()
    with CoinGeckoImitation(make_coins(args.coins), port=args.port) as imitation:
        print(f"serving {len(imitation.coins)} coins at {imitation.url}", flush=True)
        try:
            imitation.thread.join()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
