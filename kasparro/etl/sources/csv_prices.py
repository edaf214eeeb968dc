"""csv1: a clean price feed, ``id,name,value,timestamp`` with prices in USD."""

from kasparro.etl.parsing import parse_amount, parse_timestamp
from kasparro.etl.sources.base import Observation
from kasparro.etl.sources.csv_feed import CsvSource
from kasparro.models import RawCsvRecord


class CsvPricesSource(CsvSource):
    """Each row is one USD price of one coin; ``id`` is the coin's id in the feed."""

    name = "csv1"
    raw_model = RawCsvRecord
    encoding_setting = "CSV1_ENCODING"
    path_setting = "CSV1_PATH"
    columns = ("id", "name", "value", "timestamp")

    def row_observations(self, fields: dict[str, str]) -> list[Observation]:
        """Map ``value`` to ``price_usd`` at ``timestamp``."""
        return [
            Observation(
                external_id=fields["id"],
                metric="price_usd",
                value=parse_amount(fields["value"]),
                timestamp=parse_timestamp(fields["timestamp"]),
                name=fields["name"] or None,
                asset_hint=fields["id"].lower(),
            )
        ]
