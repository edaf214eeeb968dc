"""csv2: a market-cap feed with quirks: ``record_id,full_name,score,created_at``."""

import re

from kasparro.etl.parsing import parse_amount, parse_timestamp
from kasparro.etl.sources.base import Observation
from kasparro.etl.sources.csv_feed import CsvSource
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
    encoding_setting = "CSV2_ENCODING"
    path_setting = "CSV2_PATH"
    columns = ("record_id", "full_name", "score", "created_at")

    def row_observations(self, fields: dict[str, str]) -> list[Observation]:
        """Map ``score`` to ``market_cap_usd`` at ``created_at``, named from ``full_name``."""
        name, symbol = split_full_name(fields["full_name"])
        return [
            Observation(
                external_id=fields["record_id"],
                metric="market_cap_usd",
                value=parse_amount(fields["score"]),
                timestamp=parse_timestamp(fields["created_at"]),
                name=name,
                symbol=symbol,
            )
        ]
