"""Schemas of ``GET /health``: the service's dependencies and each source's newest run."""

from marshmallow import Schema, fields, validate


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
