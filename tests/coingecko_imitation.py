"""A real HTTP server on loopback that imitates CoinGecko's ``/coins/markets``.

It serves coins page by page, records every request it receives (headers, arrival time and the
status it was answered with) and can be told to move prices between runs, or to misbehave:

    imitation.fail_next(Fault(429, headers={"Retry-After": "1"}))  # the next request only
    imitation.fail_page(2, Fault(503))                             # page 2, until cleared
    imitation.fail_next(Fault(delay=0.6))                          # slow, then the page as usual

One-shot faults are consumed first in, first out by the next markets requests, whatever their page;
a page fault answers every request for that page until ``clear_faults()``. Run it alone with
``python -m tests.coingecko_imitation``.
"""

import argparse
import json
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


class CoinGeckoImitation:
    """Serve a list of coins as CoinGecko would, on 127.0.0.1 and a free port."""

    def __init__(self, coins: list[dict] | None = None, port: int = 0):
        self.coins = coins if coins is not None else make_coins(len(KNOWN_COINS))
        self.requests: list[RecordedRequest] = []
        self.delay_seconds = 0.0
        self.queued_faults: deque[Fault] = deque()
        self.page_faults: dict[int, Fault] = {}
        self.lock = threading.Lock()
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
        with self.lock:
            self.queued_faults.extend(faults)

    def fail_page(self, page: int, fault: Fault | None) -> None:
        """Answer every request for ``page`` with ``fault``; ``None`` lets the page through."""
        with self.lock:
            if fault is None:
                self.page_faults.pop(page, None)
            else:
                self.page_faults[page] = fault

    def clear_faults(self) -> None:
        """Drop every queued and per-page fault."""
        with self.lock:
            self.queued_faults.clear()
            self.page_faults.clear()

    def _next_fault(self, page: int) -> Fault | None:
        with self.lock:
            if self.queued_faults:
                return self.queued_faults.popleft()
            return self.page_faults.get(page)

    def respond(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Return status, headers and body for one markets request, after any set delay."""
        time.sleep(self.delay_seconds)
        per_page = int(query.get("per_page", 100))
        page = int(query.get("page", 1))
        fault = self._next_fault(page)
        if fault is not None:
            time.sleep(fault.delay)
        if fault is None or (fault.status == 200 and fault.body is None):
            with self.lock:
                chunk = self.coins[(page - 1) * per_page : page * per_page]
                body = json.dumps(chunk).encode()
            headers = {"Content-Type": "application/json"}
            return 200, {**headers, **(fault.headers if fault else {})}, body
        body = fault.body
        if body is None:
            error = {"status": {"error_code": fault.status, "error_message": "imitated fault"}}
            body = json.dumps(error)
        if isinstance(body, str):
            body = body.encode()
        return fault.status, {"Content-Type": fault.content_type, **fault.headers}, body

    def _handler(self):
        imitation = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                recorded = RecordedRequest(
                    parts.path,
                    query,
                    {k.lower(): v for k, v in self.headers.items()},
                    at=time.monotonic(),
                )
                with imitation.lock:
                    imitation.requests.append(recorded)
                if parts.path != MARKETS_PATH:
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
