"""csv1: a clean price feed, ``id,name,value,timestamp`` with prices in USD."""

from kasparro.etl.sources.csv_feed import CoinNames, CsvSource
from kasparro.models import RawCsvRecord


class CsvPricesSource(CsvSource):
    """Each row is one USD price of one coin; ``id`` is the coin's id in the feed."""

    name = "csv1"
    raw_model = RawCsvRecord
    setting_prefix = "CSV1"
    bundled_file = "source1.csv"
    columns = ("id", "name", "value", "timestamp")
    metric = "price_usd"

    def coin_names(self, external_id: str, name: str) -> CoinNames:
        """Return the row's name, and its id as the coin's canonical id."""
        return CoinNames(name=name or None, asset_hint=external_id.lower())
