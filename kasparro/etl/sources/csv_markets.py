"""csv2: a market-cap feed with quirks: ``record_id,full_name,score,created_at``."""

import re

from kasparro.etl.sources.csv_feed import CoinNames, CsvSource
from kasparro.models import RawCsv2Record

_NAME_AND_SYMBOL = re.compile(r"^(?P<name>.*?)\s*\((?P<symbol>[A-Za-z0-9.\-]{1,20})\)\s*$")


def split_full_name(full_name: str) -> tuple[str | None, str | None]:
    """Split ``Bitcoin (BTC)`` into ``("Bitcoin", "BTC")``; a bare name has no symbol."""
    match = _NAME_AND_SYMBOL.match(full_name)
    if match:
        return match["name"] or None, match["symbol"].upper()
    return full_name or None, None


class CsvMarketsSource(CsvSource):
    """Each row is one coin's market capitalisation in USD, in whatever notation the feed chose."""

    name = "csv2"
    raw_model = RawCsv2Record
    setting_prefix = "CSV2"
    bundled_file = "source2.csv"
    columns = ("record_id", "full_name", "score", "created_at")  # the score is the market cap
    metric = "market_cap_usd"

    def coin_names(self, external_id: str, name: str) -> CoinNames:
        """Return the name and symbol ``full_name`` gives; the record id is only the feed's."""
        name, symbol = split_full_name(name)
        return CoinNames(name=name, symbol=symbol)
