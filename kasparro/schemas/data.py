"""Schemas of ``GET /data``: its query arguments and limits, and a page of observations."""

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from kasparro.input_fields import AwareDateTime, Text
from kasparro.read.observations import EXACT_COUNT_LIMIT
from kasparro.schemas.common import METRICS, SOURCE_NAMES, PlainDecimal

MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 100
MAX_CURSOR_LENGTH = 200
MAX_ASSET_LENGTH = 200
MAX_SYMBOL_LENGTH = 50


class DataQuerySchema(Schema):
    """Query arguments of ``GET /data``."""

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    page_size = fields.Integer(load_default=10, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))
    cursor = Text(
        max_length=MAX_CURSOR_LENGTH,
        metadata={"description": "next_cursor of a previous page; stable deep paging"},
    )
    source = fields.String(validate=validate.OneOf(SOURCE_NAMES))
    asset = Text(
        max_length=MAX_ASSET_LENGTH, metadata={"description": "canonical id, e.g. bitcoin"}
    )
    symbol = Text(max_length=MAX_SYMBOL_LENGTH)
    metric = fields.String(validate=validate.OneOf(METRICS))
    since = AwareDateTime(metadata={"description": "observations at or after this time"})
    until = AwareDateTime(metadata={"description": "observations at or before this time"})

    @validates_schema
    def check_range(self, data, **kwargs):
        """Reject a time range that ends before it starts."""
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise ValidationError("since must not be after until", "since")

    @post_load
    def normalise(self, data, **kwargs):
        """Compare symbols in upper case and asset ids in lower case, as they are stored."""
        if "symbol" in data:
            data["symbol"] = data["symbol"].strip().upper()
        if "asset" in data:
            data["asset"] = data["asset"].strip().lower()
        return data


class UnifiedRecordSchema(Schema):
    """One observation: the original fields plus the unified ones."""

    id = fields.Integer(required=True)
    source = fields.String(required=True)
    external_id = fields.String(required=True)
    name = fields.String(allow_none=True)
    value = PlainDecimal(
        as_string=True,
        required=True,
        # Sent as a string so no digit is lost; declared so (apispec would say "number").
        metadata={"description": "exact decimal", "type": "string", "format": "decimal"},
    )
    timestamp = fields.DateTime(required=True)
    asset_id = fields.String(allow_none=True)
    symbol = fields.String(allow_none=True)
    metric = fields.String(required=True)
    currency = fields.String(required=True)
    ingested_at = fields.DateTime(required=True)
    run_id = fields.Integer(required=True)


class PaginationSchema(Schema):
    """Where this page sits in the result."""

    page = fields.Integer(allow_none=True, required=True)
    page_size = fields.Integer(required=True)
    total = fields.Integer(
        required=True,
        metadata={"description": "records matching the filters; see total_is_estimate"},
    )
    total_pages = fields.Integer(required=True)
    total_is_estimate = fields.Boolean(
        required=True,
        metadata={
            "description": "true when total is an estimate: under a symbol, since or until filter"
            f" that matches more than {EXACT_COUNT_LIMIT:,} records (exact otherwise)"
        },
    )
    next_cursor = fields.String(allow_none=True, required=True)


class MetaSchema(Schema):
    """Request bookkeeping."""

    request_id = fields.String(required=True)
    api_latency_ms = fields.Float(required=True)


class DataPageSchema(Schema):
    """A page of ``GET /data``."""

    data = fields.List(fields.Nested(UnifiedRecordSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)
    meta = fields.Nested(MetaSchema, required=True)
