"""Marshmallow schemas for every request's arguments and every response body."""

from datetime import UTC

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from kasparro.etl.sources import SOURCES
from kasparro.models import RUN_TRIGGERS, RunStatus
from kasparro.queries import EXACT_COUNT_LIMIT

RUN_STATUSES = [status.value for status in RunStatus]

# What the filters accept follows from what the sources declare.
SOURCE_NAMES = tuple(SOURCES)
METRICS = tuple(dict.fromkeys(metric for source in SOURCES.values() for metric in source.metrics))
MAX_PAGE_SIZE = 100
MAX_PAGE = 1_000_000
# Documents the header that answers 429 (Too Many Requests) carry.
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before the limit lets this client in again",
        "schema": {"type": "integer"},
    }
}


class AwareDateTime(fields.DateTime):
    """An ISO 8601 datetime; one without a zone is taken as UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except OverflowError:
            raise ValidationError("datetime out of range") from None


def _no_nul(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("must not contain a NUL character")


class Text(fields.String):
    """A string argument without NUL characters (which PostgreSQL text cannot hold)."""

    def __init__(self, *, max_length: int, **kwargs):
        super().__init__(validate=[validate.Length(min=1, max=max_length), _no_nul], **kwargs)


class PlainDecimal(fields.Decimal):
    """An exact decimal written as a string in plain notation (``0.000000012``, not ``1.2E-8``)."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else format(value, "f")


class DataQuerySchema(Schema):
    """Query arguments of ``GET /data``."""

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    page_size = fields.Integer(load_default=10, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))
    cursor = Text(
        max_length=200,
        metadata={"description": "next_cursor of a previous page; stable deep paging"},
    )
    source = fields.String(validate=validate.OneOf(SOURCE_NAMES))
    asset = Text(max_length=200, metadata={"description": "canonical id, e.g. bitcoin"})
    symbol = Text(max_length=50)
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


def run_count(description: str) -> fields.Integer:
    """Return a field for one of a run's counts."""
    return fields.Integer(required=True, metadata={"description": description})


class RunSchema(Schema):
    """One run of one source."""

    id = fields.Integer(required=True)
    source = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(RUN_STATUSES))
    trigger = fields.String(required=True, validate=validate.OneOf(RUN_TRIGGERS))
    task_id = fields.String(allow_none=True)
    started_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(allow_none=True)
    duration_ms = fields.Integer(allow_none=True)
    rows_read = run_count("records read from the source into its raw table")
    inserted = run_count("observations added to the unified table")
    updated = run_count("observations whose value changed")
    unchanged = run_count("records and observations already stored as they are")
    rejected = run_count("records rejected, each with its reason in the rejected records")
    unresolved = run_count("observations whose coin matched no canonical asset")
    checkpoint_before = fields.Dict(allow_none=True)
    checkpoint_after = fields.Dict(allow_none=True)
    error = fields.String(allow_none=True)
    details = fields.Dict(allow_none=True)


class RunListSchema(Schema):
    """The run log, newest first."""

    runs = fields.List(fields.Nested(RunSchema), required=True)


class RunsQuerySchema(Schema):
    """Query arguments of ``GET /runs``."""

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    source = fields.String(validate=validate.OneOf(SOURCE_NAMES))
    status = fields.String(validate=validate.OneOf(RUN_STATUSES))


class LastRunSchema(Schema):
    """The newest run of any source."""

    timestamp = fields.DateTime(allow_none=True, required=True)
    status = fields.String(allow_none=True, required=True)
    records_processed = fields.Integer(required=True)


class SourceHealthSchema(Schema):
    """A source's newest run."""

    status = fields.String(allow_none=True, required=True)
    finished_at = fields.DateTime(allow_none=True, required=True)
    error = fields.String(allow_none=True, required=True)


class HealthSchema(Schema):
    """Liveness of the service and its dependencies."""

    status = fields.String(
        required=True, validate=validate.OneOf(("healthy", "degraded", "unhealthy"))
    )
    database_connected = fields.Boolean(required=True)
    broker_connected = fields.Boolean(allow_none=True, required=True)
    last_etl_run = fields.Nested(LastRunSchema, allow_none=True, required=True)
    sources = fields.Dict(
        keys=fields.String(), values=fields.Nested(SourceHealthSchema), required=True
    )


class SourceStatsSchema(Schema):
    """Totals and run history of one source."""

    total_records = fields.Integer(required=True)
    unresolved_records = fields.Integer(required=True)
    rejected_records = fields.Integer(required=True)
    records_processed = fields.Integer(required=True)
    last_run = fields.Nested(RunSchema, allow_none=True, required=True)
    last_status = fields.String(allow_none=True, required=True)
    last_duration_ms = fields.Integer(allow_none=True, required=True)
    last_success_at = fields.DateTime(allow_none=True, required=True)
    last_failure_at = fields.DateTime(allow_none=True, required=True)
    run_counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


class SourceSummarySchema(Schema):
    """One source in the original API's shape: records, and its newest run's time and status."""

    source = fields.String(required=True)
    total_records = fields.Integer(required=True)
    last_run = fields.DateTime(
        allow_none=True,
        required=True,
        metadata={"description": "when the newest run finished (or started, while it runs)"},
    )
    status = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "the newest run's status; null before the first run"},
    )


class StatsSchema(Schema):
    """Statistics for every source."""

    total_records = fields.Integer(required=True)
    sources = fields.Dict(
        keys=fields.String(), values=fields.Nested(SourceStatsSchema), required=True
    )
    stats = fields.List(
        fields.Nested(SourceSummarySchema),
        required=True,
        metadata={"description": "the original API's shape, one entry per source by name"},
    )


class EtlRunRequestSchema(Schema):
    """Body of ``POST /etl/run``."""

    sources = fields.List(
        fields.String(validate=validate.OneOf(SOURCE_NAMES)),
        load_default=lambda: list(SOURCE_NAMES),
        validate=validate.Length(min=1, max=len(SOURCE_NAMES)),
        metadata={"description": "sources to run; default all"},
    )

    @post_load
    def deduplicate(self, data, **kwargs):
        """Run each named source once, in the order given."""
        data["sources"] = list(dict.fromkeys(data["sources"]))
        return data


class QueuedRunSchema(Schema):
    """A run that was started."""

    source = fields.String(required=True)
    run_id = fields.Integer(required=True)
    task_id = fields.String(required=True)


class SkippedRunSchema(Schema):
    """A source that was already running; the attempt was recorded as a SKIPPED run."""

    source = fields.String(required=True)
    skipped_run_id = fields.Integer(required=True)
    running_run_id = fields.Integer(required=True)


class EtlRunResponseSchema(Schema):
    """What ``POST /etl/run`` started and skipped."""

    runs = fields.List(fields.Nested(QueuedRunSchema), required=True)
    skipped = fields.List(fields.Nested(SkippedRunSchema), required=True)
    mode = fields.String(
        required=True,
        validate=validate.OneOf(("queued", "eager")),
        metadata={"description": "queued on the broker, or run in-process (no broker)"},
    )
