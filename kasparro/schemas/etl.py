"""Schemas of ``POST /etl/run``: the sources asked for, and the runs started and skipped."""

from marshmallow import Schema, fields, post_load, validate

from kasparro.schemas.common import SOURCE_NAMES


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
