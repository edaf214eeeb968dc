"""What every resource's schemas share: source names, metrics, exact decimals, 429's header."""

from marshmallow import fields

from kasparro.etl.sources import SOURCES

# What the filters accept follows from what the sources declare.
SOURCE_NAMES = tuple(SOURCES)
METRICS = tuple(dict.fromkeys(metric for source in SOURCES.values() for metric in source.metrics))
# Documents the header that answers 429 (Too Many Requests) carry.
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before the limit lets this client in again",
        "schema": {"type": "integer"},
    }
}


class PlainDecimal(fields.Decimal):
    """An exact decimal written as a string in plain notation (``0.000000012``, not ``1.2E-8``)."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else format(value, "f")


def exact_decimal(description: str, **kwargs) -> PlainDecimal:
    """Return a field for an exact decimal, sent as a string so that no digit is lost."""
    return PlainDecimal(
        as_string=True,
        required=True,
        metadata={"description": description, "type": "string", "format": "decimal"},
        **kwargs,
    )
