"""Schemas of ``GET /runs`` and ``GET /runs/<id>``: the run log and its limits."""

from marshmallow import Schema, fields, validate

from kasparro.models import RUN_TRIGGERS, RunStatus
from kasparro.schemas.common import SOURCE_NAMES

RUN_STATUSES = [status.value for status in RunStatus]
MAX_RUNS = 500


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

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_RUNS))
    source = fields.String(validate=validate.OneOf(SOURCE_NAMES))
    status = fields.String(validate=validate.OneOf(RUN_STATUSES))
