"""Schemas of ``GET /stats``: totals and run history per source."""

from marshmallow import Schema, fields

from kasparro.schemas.runs import RunSchema


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
