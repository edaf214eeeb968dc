"""coingecko_api: paged ``/coins/markets``, one price, market cap and volume per coin update."""

import hashlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from kasparro.etl.parsing import InvalidValue, parse_amount, parse_timestamp
from kasparro.etl.sources.base import KnownAsset, Observation, RawRow, Source, SourceError
from kasparro.models import RawApiRecord

METRIC_FIELDS = (
    ("price_usd", "current_price"),
    ("market_cap_usd", "market_cap"),
    ("volume_24h_usd", "total_volume"),
)
USER_AGENT = "kasparro/0.1 (+market-data pipeline)"


def key_header_for(url: str) -> str:
    """Return the header CoinGecko expects the key in: pro keys on pro-api, demo keys elsewhere."""
    host = urlsplit(url).hostname or ""
    return "x-cg-pro-api-key" if host.startswith("pro-api.") else "x-cg-demo-api-key"


def build_session(settings: dict[str, Any]) -> requests.Session:
    """Return a session that retries transient failures and sends the key only as a header."""
    session = requests.Session()
    retry = Retry(
        total=2,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET",),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
    if settings["API_KEY"]:
        header = settings["API_KEY_HEADER"] or key_header_for(settings["API_SOURCE_URL"])
        session.headers[header] = settings["API_KEY"]
    return session


class CoinGeckoSource(Source):
    """Every run fetches the whole ranking (the API has no "since"); writes are incremental.

    A coin's raw key is its id with its ``last_updated``, so a coin that has not moved since the
    last run is not stored, transformed or written again.
    """

    name = "coingecko_api"
    raw_model = RawApiRecord

    def read(self, cursor: dict[str, Any] | None) -> Iterator[RawRow]:
        """Yield each coin object of each page, stopping early at a short page."""
        per_page = self.settings["API_PER_PAGE"]
        with build_session(self.settings) as session:
            for page in range(1, self.settings["API_MAX_PAGES"] + 1):
                coins = self._fetch_page(session, page, per_page)
                for coin in coins:
                    yield self._raw_row(coin)
                if len(coins) < per_page:
                    return

    def _fetch_page(self, session: requests.Session, page: int, per_page: int) -> list[Any]:
        url = self.settings["API_SOURCE_URL"]
        params = {
            "vs_currency": "usd",
            "order": "market_cap_desc",
            "per_page": per_page,
            "page": page,
            "sparkline": "false",
        }
        where = f"{urlsplit(url).netloc} page {page}"
        try:
            response = session.get(url, params=params, timeout=self.settings["API_TIMEOUT_SECONDS"])
        except requests.RequestException as exc:
            raise SourceError(
                f"cannot reach {where}: {type(exc).__name__}", transient=True
            ) from None
        if response.status_code != 200:
            transient = response.status_code == 429 or response.status_code >= 500
            raise SourceError(f"{where} answered HTTP {response.status_code}", transient=transient)
        try:
            body = response.json()
        except ValueError:
            raise SourceError(f"{where} answered with a body that is not JSON") from None
        if not isinstance(body, list):
            raise SourceError(f"{where} answered with a JSON {type(body).__name__}, not a list")
        return body

    @staticmethod
    def _raw_row(coin: Any) -> RawRow:
        coin_id = coin.get("id") if isinstance(coin, dict) else None
        updated = coin.get("last_updated") if isinstance(coin, dict) else None
        if isinstance(coin_id, str) and isinstance(updated, str) and coin_id and updated:
            key = f"{coin_id}@{updated}"
        else:
            text = json.dumps(coin, sort_keys=True, default=str)
            key = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return RawRow(
            record_key=key[:255],
            payload=coin,
            columns={
                "external_id": str(coin_id or "")[:200],
                "source_updated_at": str(updated or "")[:64],
            },
        )

    def context(self) -> dict[str, Any]:
        """Return nothing: a coin object carries all the transform needs."""
        return {}

    def observations(self, raw: RawApiRecord, context: dict[str, Any]) -> list[Observation]:
        """Turn one coin into up to three observations; a null metric is simply not observed."""
        coin = raw.payload
        if not isinstance(coin, dict):
            raise InvalidValue(f"not a coin object: {type(coin).__name__}")
        if not raw.external_id:
            raise InvalidValue("coin has no id")
        timestamp = parse_timestamp(coin.get("last_updated"))
        name, symbol = coin.get("name"), coin.get("symbol")
        observations = [
            Observation(
                external_id=raw.external_id,
                metric=metric,
                value=parse_amount(coin[field]),
                timestamp=timestamp,
                name=name if isinstance(name, str) else None,
                symbol=symbol.upper() if isinstance(symbol, str) else None,
                asset_hint=raw.external_id,
            )
            for metric, field in METRIC_FIELDS
            if coin.get(field) is not None
        ]
        if not observations:
            raise InvalidValue("coin has no price, market cap or volume")
        return observations

    def known_assets(self, raw: RawApiRecord) -> list[KnownAsset]:
        """Return the coin's own identity: CoinGecko is the authority on its ids."""
        coin = raw.payload
        if not isinstance(coin, dict) or not raw.external_id:
            return []
        symbol, name = coin.get("symbol"), coin.get("name")
        if not isinstance(symbol, str) or not isinstance(name, str):
            return []
        return [KnownAsset(id=raw.external_id, symbol=symbol.lower()[:50], name=name[:200])]

    def advance(self, cursor: dict, raw: RawApiRecord, context: dict[str, Any]) -> dict:
        """Return the high-water ``last_updated`` seen so far."""
        high_water = max(cursor.get("last_updated") or "", raw.source_updated_at)
        return {"last_updated": high_water or None}

    def describe(self, raw: RawApiRecord) -> tuple[str, str]:
        """Return the coin id and its JSON."""
        return f"coin {raw.external_id or '?'}", json.dumps(raw.payload, default=str)

    def external_id(self, raw: RawApiRecord) -> str | None:
        """Return the coin id."""
        return raw.external_id or None
