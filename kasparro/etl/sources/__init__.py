"""The registry of sources: adding a source means one module and one line here."""

from typing import Any

from kasparro.etl.sources.base import Source, SourceError
from kasparro.etl.sources.coingecko import CoinGeckoSource
from kasparro.etl.sources.csv_markets import CsvMarketsSource
from kasparro.etl.sources.csv_prices import CsvPricesSource

SOURCES: dict[str, type[Source]] = {
    CoinGeckoSource.name: CoinGeckoSource,
    CsvPricesSource.name: CsvPricesSource,
    CsvMarketsSource.name: CsvMarketsSource,
}
SOURCE_NAMES = tuple(SOURCES)


def get_source(name: str, settings: dict[str, Any]) -> Source:
    """Return the source called ``name``, configured from ``settings``."""
    try:
        return SOURCES[name](settings)
    except KeyError:
        raise SourceError(f"unknown source {name!r}; known: {', '.join(SOURCE_NAMES)}") from None
