"""Schemas of ``GET /compare-runs`` and ``GET /anomalies``, with their limits."""

from marshmallow import Schema, fields, validate

from kasparro.input_fields import AwareDateTime, Text
from kasparro.read.anomalies import KINDS
from kasparro.read.runs import MAX_RUN_ID, RUN_MEASURES
from kasparro.schemas.common import METRICS, SOURCE_NAMES, exact_decimal
from kasparro.schemas.runs import RUN_STATUSES, RunSchema

MAX_MOVERS = 100
MAX_PAGE_SIZE = 100
MAX_CURSOR_LENGTH = 500


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
        max_length=MAX_CURSOR_LENGTH,
        metadata={"description": "next_cursor of a previous page, same filters"},
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
