"""A throw-away fourth source, whole in this one module: a circulating-supply feed.

Its format is its own (``ticker,project,coins,as_of``), as are its raw table, metric and
settings. tests/test_fourth_source.py loads it into a fresh process and runs it end to end;
nothing else in the repository names it.
"""

from kasparro.etl.sources.csv_feed import CoinNames, CsvSource
from kasparro.models import Base, RawCsvRecordMixin
from kasparro.setting import Setting


class RawSupplyRecord(RawCsvRecordMixin, Base):
    """A row of the supply feed, exactly as read."""

    __tablename__ = "raw_supply_records"


class CsvSupplySource(CsvSource):
    """Each row is how many coins of one ticker were in circulation at ``as_of``."""

    name = "supply"
    raw_model = RawSupplyRecord
    schedule_seconds = 900
    raw_retention_days = 30
    setting_prefix = "SUPPLY_CSV"
    bundled_file = "supply.csv"
    columns = ("ticker", "project", "coins", "as_of")
    metric = "circulating_supply"
    own_settings = (Setting("SUPPLY_UNIT", "coins", "what the supply feed counts in"),)

    @property
    def currency(self) -> str:
        """Return the unit the feed counts in: coins, not an amount of money."""
        return self.settings["SUPPLY_UNIT"]

    def coin_names(self, external_id: str, name: str) -> CoinNames:
        """Return the ticker as the coin's symbol, and the project's name."""
        return CoinNames(name=name or None, symbol=external_id.upper())
