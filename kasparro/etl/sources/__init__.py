"""The registry of sources: a source is one module, imported here, whose class registers itself."""

from typing import Any

from kasparro.etl.errors import SourceError
from kasparro.etl.sources import coingecko, csv_markets, csv_prices  # noqa: F401  (they register)
from kasparro.etl.sources.base import SOURCES, Source


def source_class(name: str) -> type[Source]:
    """Return the class of the source called ``name``; raise SourceError for an unknown one."""
    try:
        return SOURCES[name]
    except KeyError:
        known = ", ".join(SOURCES)
        raise SourceError(f"unknown source {name!r}; known: {known}") from None


def get_source(name: str, settings: dict[str, Any]) -> Source:
    """Return the source called ``name``, configured from ``settings``."""
    return source_class(name)(settings)
