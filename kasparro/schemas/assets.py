"""Schemas of ``GET /assets``, ``GET /assets/<id>`` and its history, with their limits."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from kasparro.input_fields import AwareDateTime, Text
from kasparro.read.assets import PRICE, RESOLVED_FROM_WINDOW, SORTS
from kasparro.read.history import INTERVALS, MAX_HISTORY_LIMIT
from kasparro.schemas.common import METRICS, SOURCE_NAMES, exact_decimal

MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 100
MAX_QUERY_LENGTH = 100
MAX_CURSOR_LENGTH = 200


def percent(description: str) -> fields.Float:
    """Return a field for a percentage, a number; null when it cannot be known."""
    return fields.Float(allow_none=True, required=True, metadata={"description": description})


class AssetsQuerySchema(Schema):
    """Query arguments of ``GET /assets``."""

    q = Text(
        max_length=MAX_QUERY_LENGTH,
        metadata={"description": "part of the name or symbol, in any case (`coin`, `btc`)"},
    )
    sort = fields.String(
        load_default="market_cap",
        validate=validate.OneOf(SORTS),
        metadata={"description": "market_cap: largest consensus market cap first; name: A to Z"},
    )
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    page_size = fields.Integer(load_default=10, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


class AssetSummarySchema(Schema):
    """One asset in the list: its consensus price, 24 h change, spread and market cap."""

    id = fields.String(required=True, metadata={"description": "canonical id, e.g. bitcoin"})
    symbol = fields.String(required=True)
    name = fields.String(required=True)
    price_usd = exact_decimal(
        "median of each source's newest price; null without one", allow_none=True
    )
    change_24h_percent = percent(
        "change of price_usd from the median of each source's newest price at or before 24 h"
        " before the newest price; null without one"
    )
    spread_percent = percent("(highest - lowest) of the sources' newest prices, in % of price_usd")
    market_cap_usd = exact_decimal(
        "median of each source's newest market cap; null without one", allow_none=True
    )
    sources = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "the sources with observations of the asset, by name"},
    )
    last_reported_at = fields.DateTime(
        allow_none=True,
        required=True,
        metadata={"description": "time of the asset's newest observation, of any metric"},
    )


class AssetPaginationSchema(Schema):
    """Where this page of assets sits."""

    page = fields.Integer(required=True)
    page_size = fields.Integer(required=True)
    total = fields.Integer(required=True, metadata={"description": "assets matching q"})
    total_pages = fields.Integer(required=True)


class AssetListSchema(Schema):
    """A page of ``GET /assets``."""

    assets = fields.List(fields.Nested(AssetSummarySchema), required=True)
    pagination = fields.Nested(AssetPaginationSchema, required=True)


class LatestValueSchema(Schema):
    """A source's newest value of one metric."""

    source = fields.String(required=True)
    metric = fields.String(required=True)
    value = exact_decimal("exact decimal")
    timestamp = fields.DateTime(required=True)


class ConsensusSchema(Schema):
    """What the sources' newest values of one metric agree on."""

    metric = fields.String(required=True)
    median = exact_decimal("median of the sources' newest values")
    low = exact_decimal("lowest of them")
    high = exact_decimal("highest of them")
    spread_percent = percent("(high - low) in % of the median; null when the median is 0")
    sources = fields.Integer(required=True, metadata={"description": "how many sources"})


class SourceReportSchema(Schema):
    """When a source last reported the asset."""

    source = fields.String(required=True)
    timestamp = fields.DateTime(
        required=True, metadata={"description": "its newest observation of the asset"}
    )


class ResolvedNameSchema(Schema):
    """A name and symbol the asset was resolved from, or an operator's alias."""

    name = fields.String(allow_none=True, required=True)
    symbol = fields.String(allow_none=True, required=True)
    source = fields.String(
        required=True, metadata={"description": "the source that used it, or `alias`"}
    )
    observations = fields.Integer(
        allow_none=True,
        required=True,
        metadata={
            "description": f"how many of the asset's newest {RESOLVED_FROM_WINDOW:,}"
            " observations carry it; null for an alias"
        },
    )


class AssetDetailSchema(Schema):
    """One asset across sources."""

    id = fields.String(required=True)
    symbol = fields.String(required=True)
    name = fields.String(required=True)
    latest = fields.List(fields.Nested(LatestValueSchema), required=True)
    consensus = fields.List(fields.Nested(ConsensusSchema), required=True)
    last_reported = fields.List(fields.Nested(SourceReportSchema), required=True)
    resolved_from = fields.List(fields.Nested(ResolvedNameSchema), required=True)


class HistoryQuerySchema(Schema):
    """Query arguments of ``GET /assets/<id>/history``."""

    metric = fields.String(load_default=PRICE, validate=validate.OneOf(METRICS))
    source = fields.String(
        validate=validate.OneOf(SOURCE_NAMES),
        metadata={"description": "one source's observations; all sources together without"},
    )
    interval = fields.String(load_default="1h", validate=validate.OneOf(tuple(INTERVALS)))
    since = AwareDateTime(metadata={"description": "observations at or after this time"})
    until = AwareDateTime(metadata={"description": "observations before this time"})
    cursor = Text(
        max_length=MAX_CURSOR_LENGTH, metadata={"description": "next_cursor of the previous page"}
    )
    limit = fields.Integer(
        load_default=100,
        validate=validate.Range(min=1, max=MAX_HISTORY_LIMIT),
        metadata={"description": "bucket widths a page spans (empty buckets are left out)"},
    )

    @validates_schema
    def check_range(self, data, **kwargs):
        """Reject a time range that ends before it starts."""
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise ValidationError("since must not be after until", "since")


class BucketSchema(Schema):
    """The observations of one bucket."""

    start = fields.DateTime(required=True, metadata={"description": "the bucket's first instant"})
    open = exact_decimal("value of the bucket's first observation, by (timestamp, id)")
    high = exact_decimal("highest value")
    low = exact_decimal("lowest value")
    close = exact_decimal("value of the bucket's last observation, by (timestamp, id)")
    count = fields.Integer(required=True, metadata={"description": "observations in the bucket"})


class HistorySchema(Schema):
    """A page of an asset's history, oldest bucket first."""

    asset_id = fields.String(required=True)
    metric = fields.String(required=True)
    source = fields.String(allow_none=True, required=True)
    interval = fields.String(required=True)
    buckets = fields.List(fields.Nested(BucketSchema), required=True)
    next_cursor = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "pass as cursor for the next page; null after the last"},
    )
