"""coingecko_api: paged ``/coins/markets``, one price, market cap and volume per coin update."""

import hashlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy.orm import Session

from kasparro.etl.drift import FieldMap, match_fields
from kasparro.etl.errors import SourceError
from kasparro.etl.http_client import JsonClient, RetryPolicy
from kasparro.etl.parsing import InvalidValue, check_text, parse_amount, parse_timestamp
from kasparro.etl.ratelimit import pacer_for
from kasparro.etl.sources.base import (
    KnownAsset,
    Observation,
    RawRow,
    ReadReport,
    Source,
)
from kasparro.models import Asset, Checkpoint, RawApiRecord
from kasparro.setting import Setting, at_least, number, url_password, whole_number

METRIC_FIELDS = (
    ("price_usd", "current_price"),
    ("market_cap_usd", "market_cap"),
    ("volume_24h_usd", "total_volume"),
)
EXPECTED_FIELDS = ("id", "symbol", "name", *(f for _, f in METRIC_FIELDS), "last_updated")
REQUIRED_FIELDS = ("id", "last_updated", *(f for _, f in METRIC_FIELDS))
# Fields /coins/markets sends that Kasparro keeps in the raw record but does not read.
KNOWN_FIELDS = (
    "image", "market_cap_rank", "fully_diluted_valuation", "high_24h", "low_24h",
    "price_change_24h", "price_change_percentage_24h", "market_cap_change_24h",
    "market_cap_change_percentage_24h", "circulating_supply", "total_supply", "max_supply",
    "ath", "ath_change_percentage", "ath_date", "atl", "atl_change_percentage", "atl_date",
    "roi", "price_change_percentage_1h_in_currency", "price_change_percentage_24h_in_currency",
    "price_change_percentage_7d_in_currency", "price_change_percentage_14d_in_currency",
    "price_change_percentage_30d_in_currency", "price_change_percentage_200d_in_currency",
    "price_change_percentage_1y_in_currency",
)  # fmt: skip
USER_AGENT = "kasparro/0.1 (+market-data pipeline)"
COINGECKO_MARKETS_URL = "https://api.coingecko.com/api/v3/coins/markets"


def key_header_for(url: str) -> str:
    """Return the header CoinGecko expects the key in: pro keys on pro-api, demo keys elsewhere."""
    host = urlsplit(url).hostname or ""
    return "x-cg-pro-api-key" if host.startswith("pro-api.") else "x-cg-demo-api-key"


def build_session(settings: dict[str, Any]) -> requests.Session:
    """Return a session that sends the key only as a header, never in the URL."""
    session = requests.Session()
    session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
    if settings["API_KEY"]:
        header = settings["API_KEY_HEADER"] or key_header_for(settings["API_SOURCE_URL"])
        session.headers[header] = settings["API_KEY"]
    return session


class CoinGeckoSource(Source):
    """Every run fetches the whole ranking (the API has no "since"); writes are incremental.

    A coin's raw key is its id with its ``last_updated``, so a coin that has not moved since the
    last run is not stored, transformed or written again. A page that fails after earlier pages
    succeeded ends the read early: what was read is loaded and the run is PARTIAL.
    """

    name = "coingecko_api"
    raw_model = RawApiRecord
    metrics = tuple(metric for metric, _ in METRIC_FIELDS)
    schedule_seconds = 300
    raw_retention_days = 7  # its payloads are big and come every run
    own_settings = (
        Setting(
            "API_SOURCE_URL",
            COINGECKO_MARKETS_URL,
            "the `/coins/markets` URL to read",
            secret_parts=url_password,  # a proxy's URL may carry a password
        ),
        Setting(
            "API_KEY",
            "",
            "CoinGecko key, sent only in a header; empty: the keyless public API",
            secret=True,
        ),
        Setting("API_KEY_HEADER", "", "the key's header name; empty: chosen from the host"),
        Setting(
            "API_MAX_PAGES", 4, "pages fetched per run (it stops at a short page)", whole_number
        ),
        Setting("API_PER_PAGE", 250, "coins per page", whole_number),
        Setting("API_TIMEOUT_SECONDS", 10.0, "connect and read timeout per request", number),
        Setting(
            "API_CALLS_PER_MINUTE",
            30.0,
            "pacing of calls, shared through Redis when there is one",
            number,
        ),
        Setting("API_MAX_ATTEMPTS", 5, "tries per page (at least 1)", at_least(1)),
        Setting("API_RETRY_BUDGET_SECONDS", 120.0, "seconds all tries of a page may take", number),
        Setting(
            "API_BACKOFF_BASE_SECONDS", 1.0, "first wait between tries, doubled each time", number
        ),
        Setting("API_BACKOFF_MAX_SECONDS", 30.0, "longest wait between tries", number),
        Setting(
            "API_MAX_PAGE_BYTES",
            20 * 1024 * 1024,
            "largest page accepted, in bytes; a larger one fails the read without being kept",
            whole_number,
        ),
    )

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self._fields = FieldMap()
        self._incomplete = ""

    def read(self, session: Session, checkpoint: Checkpoint | None) -> Iterator[RawRow]:
        """Yield each coin object of each page, stopping early at a short or failed page."""
        per_page = self.settings["API_PER_PAGE"]
        pacer = pacer_for(
            self.name, self.settings["API_CALLS_PER_MINUTE"], self.settings["REDIS_URL"]
        )
        with build_session(self.settings) as http:
            client = JsonClient(
                self.name,
                http,
                pacer,
                RetryPolicy.from_settings(self.settings),
                self.settings["API_TIMEOUT_SECONDS"],
                self.settings["API_MAX_PAGE_BYTES"],
            )
            try:
                for page in range(1, self.settings["API_MAX_PAGES"] + 1):
                    try:
                        coins = self._fetch_page(client, page, per_page)
                    except SourceError as exc:
                        if page == 1:
                            raise
                        self._incomplete = f"stopped after page {page - 1}: {exc}"
                        return
                    if page == 1:
                        self._fields = self._match_fields(coins)
                    yield from (self._raw_row(coin) for coin in coins)
                    if len(coins) < per_page:
                        return
            finally:
                pacer.close()

    def _fetch_page(self, client: JsonClient, page: int, per_page: int) -> list[Any]:
        url = self.settings["API_SOURCE_URL"]
        params = {
            "vs_currency": "usd",
            "order": "market_cap_desc",
            "per_page": per_page,
            "page": page,
            "sparkline": "false",
        }
        parts = urlsplit(url)  # host and port only: a URL's user:password never reaches a message
        where = f"{parts.hostname}{f':{parts.port}' if parts.port else ''} page {page}"
        body = client.get_json(url, params, where)
        if not isinstance(body, list):
            raise SourceError(f"{where} answered with a JSON {type(body).__name__}, not a list")
        return body

    def _match_fields(self, coins: list[Any]) -> FieldMap:
        names = {name for coin in coins if isinstance(coin, dict) for name in coin}
        if not names:
            return FieldMap()
        return match_fields(
            EXPECTED_FIELDS,
            sorted(names),
            self.settings["SCHEMA_DRIFT_THRESHOLD"],
            known=KNOWN_FIELDS,
            required=REQUIRED_FIELDS,
        )

    def _raw_row(self, coin: Any) -> RawRow:
        is_object = isinstance(coin, dict)
        coin_id = _column_text(
            self._fields.get(coin, "id") if is_object else None, RawApiRecord.external_id
        )
        updated = _column_text(
            self._fields.get(coin, "last_updated") if is_object else None,
            RawApiRecord.source_updated_at,
        )
        key = f"{coin_id}@{updated}"
        if not (coin_id and updated) or len(key) > RawApiRecord.record_key.type.length:
            # No usable natural key: the coin's content identifies it, and it is rejected later.
            text = json.dumps(coin, sort_keys=True, default=str)
            key = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return RawRow(
            record_key=key,
            payload=coin,
            columns={"external_id": coin_id, "source_updated_at": updated},
        )

    def report(self) -> ReadReport:
        """Return where each field was found, and whether the read stopped early."""
        return ReadReport(fields=self._fields, incomplete=self._incomplete)

    def stored_report(self, raws: list[RawApiRecord]) -> ReadReport:
        """Match the fields of the stored coins, as a read matches a page's."""
        return ReadReport(fields=self._match_fields([raw.payload for raw in raws]))

    def observations(self, raw: RawApiRecord, report: ReadReport) -> list[Observation]:
        """Turn one coin into up to three observations; a null metric is simply not observed."""
        coin = raw.payload
        if not isinstance(coin, dict):
            raise InvalidValue(f"not a coin object: {type(coin).__name__}")
        fields = report.fields
        if fields.missing:
            raise InvalidValue("; ".join(fields.missing.values()))
        coin_id = fields.get(coin, "id")
        if not isinstance(coin_id, str) or not coin_id:
            raise InvalidValue("coin has no id")
        timestamp = parse_timestamp(fields.get(coin, "last_updated"))
        name, symbol = fields.get(coin, "name"), fields.get(coin, "symbol")
        observations = [
            Observation(
                external_id=coin_id,
                metric=metric,
                value=parse_amount(fields.get(coin, field)),
                timestamp=timestamp,
                name=name if isinstance(name, str) else None,
                symbol=symbol.upper() if isinstance(symbol, str) else None,
                asset_hint=coin_id,
            )
            for metric, field in METRIC_FIELDS
            if fields.get(coin, field) is not None
        ]
        if not observations:
            raise InvalidValue("coin has no price, market cap or volume")
        return observations

    def known_assets(self, raw: RawApiRecord, report: ReadReport) -> list[KnownAsset]:
        """Return the coin's own identity: CoinGecko is the authority on its ids."""
        coin = raw.payload
        if not isinstance(coin, dict) or not raw.external_id:
            return []
        fields = report.fields
        symbol, name = fields.get(coin, "symbol"), fields.get(coin, "name")
        if not isinstance(symbol, str) or not isinstance(name, str):
            return []
        if _column_text(symbol.lower(), Asset.symbol) != symbol.lower():
            return []  # some letters grow when lower-cased: then the coin vouches for nothing
        return [KnownAsset(id=raw.external_id, symbol=symbol.lower(), name=name)]

    def advance(self, cursor: dict, raws: list[RawApiRecord], report: ReadReport) -> dict:
        """Return the high-water ``last_updated`` seen so far."""
        high_water = max([cursor.get("last_updated") or "", *(r.source_updated_at for r in raws)])
        return {"last_updated": high_water or None}

    def describe(self, raw: RawApiRecord) -> tuple[str, str]:
        """Return the coin id and its JSON."""
        return f"coin {raw.external_id or '?'}", json.dumps(raw.payload, default=str)


def _column_text(value: Any, column) -> str:
    """Return ``value`` if ``column`` can hold it as given on every engine, else ``""``."""
    if not isinstance(value, str):
        return ""
    try:
        check_text(column.key, value, column.type.length)
    except InvalidValue:
        return ""
    return value
