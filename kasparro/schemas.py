"""Marshmallow schemas for every request's arguments and every response body."""

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from kasparro.etl.assets import alias_text, alias_too_long
from kasparro.etl.sources import SOURCES
from kasparro.input_fields import AwareDateTime, Text
from kasparro.models import RUN_TRIGGERS, Asset, RunStatus
from kasparro.read.anomalies import KINDS
from kasparro.read.assets import PRICE, RESOLVED_FROM_WINDOW, SORTS
from kasparro.read.history import INTERVALS, MAX_HISTORY_LIMIT
from kasparro.read.observations import EXACT_COUNT_LIMIT
from kasparro.read.runs import MAX_RUN_ID, RUN_MEASURES

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


def exact_decimal(description: str, **kwargs) -> PlainDecimal:
    """Return a field for an exact decimal, sent as a string so that no digit is lost."""
    return PlainDecimal(
        as_string=True,
        required=True,
        metadata={"description": description, "type": "string", "format": "decimal"},
        **kwargs,
    )


MAX_MOVERS = 100


class CompareRunsQuerySchema(Schema):
    """Query arguments of ``GET /compare-runs``."""

    run_a = fields.Integer(
        validate=validate.Range(min=1, max=MAX_RUN_ID),
        metadata={"description": "the run compared against (needs run_b)"},
    )
    run_b = fields.Integer(
        validate=validate.Range(min=1, max=MAX_RUN_ID),
        metadata={"description": "the run compared; alone, with its source's finished run before"},
    )
    source = fields.String(
        validate=validate.OneOf(SOURCE_NAMES),
        metadata={"description": "without runs: compare this source's last two finished runs"},
    )
    metric = fields.String(
        validate=validate.OneOf(METRICS), metadata={"description": "movers of this metric only"}
    )
    top = fields.Integer(
        load_default=10,
        validate=validate.Range(min=1, max=MAX_MOVERS),
        metadata={"description": "how many movers to list"},
    )


class CountDifferenceSchema(Schema):
    """A count or duration at each run, and run_b's minus run_a's."""

    run_a = fields.Integer(allow_none=True, required=True)
    run_b = fields.Integer(allow_none=True, required=True)
    difference = fields.Integer(allow_none=True, required=True)


class RateDifferenceSchema(Schema):
    """A share at each run, and run_b's minus run_a's; null where nothing was read."""

    run_a = fields.Float(allow_none=True, required=True)
    run_b = fields.Float(allow_none=True, required=True)
    difference = fields.Float(allow_none=True, required=True)


class RunCountsDifferenceSchema(Schema):
    """Each count of the two runs."""

    rows_read = fields.Nested(CountDifferenceSchema, required=True)
    inserted = fields.Nested(CountDifferenceSchema, required=True)
    updated = fields.Nested(CountDifferenceSchema, required=True)
    unchanged = fields.Nested(CountDifferenceSchema, required=True)
    rejected = fields.Nested(CountDifferenceSchema, required=True)


class DriftDifferenceSchema(Schema):
    """The schema drift events of each run, and those only one of them has."""

    run_a = fields.List(fields.Dict(), required=True)
    run_b = fields.List(fields.Dict(), required=True)
    appeared = fields.List(fields.Dict(), required=True, metadata={"description": "run_b only"})
    disappeared = fields.List(fields.Dict(), required=True, metadata={"description": "run_a only"})


class MoverSchema(Schema):
    """An asset's metric whose value moved between the two runs."""

    asset_id = fields.String(required=True)
    metric = fields.String(required=True)
    value_a = exact_decimal("the value at run_a")
    value_b = exact_decimal("the value at run_b")
    change = exact_decimal("value_b - value_a")
    change_percent = fields.Float(
        required=True, metadata={"description": "the change in % of value_a"}
    )


class RunComparisonSchema(Schema):
    """How run_b differs from run_a, two runs of one source."""

    source = fields.String(required=True)
    run_a = fields.Nested(RunSchema, required=True)
    run_b = fields.Nested(RunSchema, required=True)
    counts = fields.Nested(RunCountsDifferenceSchema, required=True)
    duration_ms = fields.Nested(CountDifferenceSchema, required=True)
    rejected_rate = fields.Nested(
        RateDifferenceSchema,
        required=True,
        metadata={"description": "rejected / rows_read; null when nothing was read"},
    )
    drift = fields.Nested(DriftDifferenceSchema, required=True)
    movers = fields.List(
        fields.Nested(MoverSchema),
        required=True,
        metadata={
            "description": "the values that moved most, by |change_percent|, then asset and"
            " metric; a value at a run is the newest observation stored when it finished"
        },
    )
    movers_compared = fields.Integer(
        required=True,
        metadata={"description": "asset metrics valued at both runs (the first value not 0)"},
    )


class AnomaliesQuerySchema(Schema):
    """Query arguments of ``GET /anomalies``."""

    source = fields.String(validate=validate.OneOf(SOURCE_NAMES))
    since = AwareDateTime(
        metadata={
            "description": "runs finished and observations made at or after this time;"
            " default 24 hours ago (a cursor keeps the time of its first page)"
        }
    )
    kind = fields.String(validate=validate.OneOf(KINDS))
    page_size = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))
    cursor = Text(
        max_length=500, metadata={"description": "next_cursor of a previous page, same filters"}
    )


class RunOutlierSchema(Schema):
    """A run's count or duration, and the history it is far from."""

    run_id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(RUN_STATUSES))
    measure = fields.String(required=True, validate=validate.OneOf(RUN_MEASURES))
    value = fields.Integer(required=True)
    median = fields.Float(required=True)
    mad = fields.Float(required=True, metadata={"description": "median absolute deviation"})
    mean_absolute_deviation = fields.Float(required=True)
    scale = fields.String(
        required=True,
        validate=validate.OneOf(("mad", "mean_ad", "unit")),
        metadata={
            "description": "what the score is measured in: MAD, the mean absolute deviation"
            " (MAD is 0), or one unit (the history is constant)"
        },
    )
    history_runs = fields.Integer(required=True)


class ValueJumpSchema(Schema):
    """Two consecutive observations of an asset's metric from one source."""

    asset_id = fields.String(required=True)
    metric = fields.String(required=True)
    record_id = fields.Integer(required=True)
    value = exact_decimal("the value observed")
    timestamp = fields.DateTime(required=True)
    previous_record_id = fields.Integer(required=True)
    previous_value = exact_decimal("the value of the observation before")
    previous_timestamp = fields.DateTime(required=True)


class SourceValueSchema(Schema):
    """A source's latest value."""

    source = fields.String(required=True)
    value = exact_decimal("the value")
    timestamp = fields.DateTime(required=True)


class DisagreementSchema(Schema):
    """The latest values of an asset's metric across sources."""

    asset_id = fields.String(required=True)
    metric = fields.String(required=True)
    median = exact_decimal("their median")
    low = exact_decimal("the lowest")
    high = exact_decimal("the highest")
    values = fields.List(fields.Nested(SourceValueSchema), required=True)


class AnomalySchema(Schema):
    """Something flagged: what (kind and the part matching it), why, and by how much."""

    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    source = fields.String(
        allow_none=True, required=True, metadata={"description": "null for a disagreement"}
    )
    at = fields.DateTime(
        allow_none=True,
        required=True,
        metadata={"description": "when the run finished, or the (newest) observation was made"},
    )
    score = fields.Float(
        required=True,
        metadata={
            "description": "run_outlier: the robust z-score; value_jump: the relative change"
            " in %; source_disagreement: the spread in % of the median"
        },
    )
    threshold = fields.Float(required=True, metadata={"description": "what |score| is beyond"})
    reason = fields.String(required=True)
    run = fields.Nested(RunOutlierSchema, metadata={"description": "run_outlier only"})
    jump = fields.Nested(ValueJumpSchema, metadata={"description": "value_jump only"})
    disagreement = fields.Nested(
        DisagreementSchema, metadata={"description": "source_disagreement only"}
    )


class ThresholdsSchema(Schema):
    """The ANOMALY_* settings the flags were raised with."""

    mad = fields.Float(required=True)
    history_runs = fields.Integer(required=True)
    jump_percent = fields.Float(required=True)
    spread_percent = fields.Float(required=True)


class AnomalyPageSchema(Schema):
    """A page of anomalies: runs, then jumps, then disagreements."""

    anomalies = fields.List(fields.Nested(AnomalySchema), required=True)
    since = fields.DateTime(required=True)
    source = fields.String(allow_none=True, required=True)
    kinds = fields.List(fields.String(validate=validate.OneOf(KINDS)), required=True)
    thresholds = fields.Nested(ThresholdsSchema, required=True)
    page_size = fields.Integer(required=True)
    next_cursor = fields.String(
        allow_none=True,
        required=True,
        metadata={
            "description": "where the next page starts; null at the end. A page reads a"
            " bounded share of the data, so it may hold fewer anomalies than page_size"
        },
    )


# The asset views (kasparro/read/assets.py).


def percent(description: str) -> fields.Float:
    """Return a field for a percentage, a number; null when it cannot be known."""
    return fields.Float(allow_none=True, required=True, metadata={"description": description})


class AssetsQuerySchema(Schema):
    """Query arguments of ``GET /assets``."""

    q = Text(
        max_length=100,
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
    cursor = Text(max_length=200, metadata={"description": "next_cursor of the previous page"})
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


# Corrections: what did not resolve, and aliases (kasparro/routes/aliases.py).


def page_fields(default_size: int) -> dict[str, fields.Integer]:
    """Return the ``page`` and ``page_size`` arguments; a page holds ``default_size`` rows."""
    return {
        "page": fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE)),
        "page_size": fields.Integer(
            load_default=default_size, validate=validate.Range(min=1, max=MAX_PAGE_SIZE)
        ),
    }


class UnresolvedQuerySchema(Schema.from_dict(page_fields(20))):
    """Query arguments of ``GET /assets/unresolved``."""

    source = fields.String(validate=validate.OneOf(SOURCE_NAMES))


class UnresolvedGroupSchema(Schema):
    """Observations of one source that did not resolve, under one name and symbol."""

    source = fields.String(required=True)
    name = fields.String(allow_none=True, required=True)
    symbol = fields.String(allow_none=True, required=True)
    observations = fields.Integer(required=True, metadata={"description": "how many"})
    latest = fields.DateTime(required=True, metadata={"description": "the newest one's time"})


class GroupPaginationSchema(Schema):
    """Where this page of groups sits."""

    page = fields.Integer(required=True)
    page_size = fields.Integer(required=True)
    total = fields.Integer(required=True, metadata={"description": "groups, exactly"})
    total_pages = fields.Integer(required=True)


class UnresolvedPageSchema(Schema):
    """A page of ``GET /assets/unresolved``: the most frequent groups first."""

    data = fields.List(fields.Nested(UnresolvedGroupSchema), required=True)
    pagination = fields.Nested(GroupPaginationSchema, required=True)
    unresolved_observations = fields.Integer(
        required=True,
        metadata={"description": "observations without an asset, in every group of the filter"},
    )


class AliasQuerySchema(Schema.from_dict(page_fields(50))):
    """Query arguments of ``GET /assets/aliases``."""

    asset = Text(max_length=200, metadata={"description": "only this asset's aliases"})

    @post_load
    def normalise(self, data, **kwargs):
        """Compare asset ids in lower case, as they are stored."""
        if "asset" in data:
            data["asset"] = data["asset"].strip().lower()
        return data


class AliasSchema(Schema):
    """A name or symbol an operator maps to an asset."""

    id = fields.Integer(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(("name", "symbol")))
    alias = fields.String(required=True, metadata={"description": "stripped, lower-cased"})
    asset_id = fields.String(required=True)
    created_at = fields.DateTime(required=True)


class AliasListSchema(Schema):
    """A page of aliases, oldest first."""

    data = fields.List(fields.Nested(AliasSchema), required=True)
    next_page = fields.Integer(
        allow_none=True, required=True, metadata={"description": "null on the last page"}
    )


class AliasRequestSchema(Schema):
    """Body of ``POST /assets/aliases``: an asset, and the name or the symbol that means it."""

    asset_id = Text(required=True, max_length=Asset.id.type.length)
    name = Text(max_length=Asset.name.type.length, metadata={"description": "a coin's name"})
    symbol = Text(max_length=Asset.symbol.type.length, metadata={"description": "a ticker"})

    @validates_schema
    def check_one_alias(self, data, **kwargs):
        """Require exactly one of name and symbol, with something besides spaces."""
        given = [kind for kind in ("name", "symbol") if kind in data]
        if len(given) != 1:
            raise ValidationError("give exactly one of name and symbol", "_schema")
        if not alias_text(data[given[0]]):
            raise ValidationError("must not be blank", given[0])
        if too_long := alias_too_long(data[given[0]]):
            raise ValidationError(f"is {too_long}", given[0])


class AliasAddedSchema(AliasSchema):
    """The alias as stored, and what adding it did."""

    created = fields.Boolean(
        required=True, metadata={"description": "false when the same alias was there already"}
    )
    resolved = fields.Integer(
        required=True, metadata={"description": "past observations it resolved now"}
    )
