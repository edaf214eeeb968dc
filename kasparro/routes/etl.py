"""``POST /etl/run``: start runs over HTTP, behind a bearer token checked before the body."""

from flask import current_app
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema

from kasparro.access import admin_token
from kasparro.celery_app import broker_reachable
from kasparro.dispatch import BrokerUnavailable, dispatch_run
from kasparro.etl.runs import SourceBusy
from kasparro.extensions import AppJSONParser
from kasparro.schemas.etl import EtlRunRequestSchema, EtlRunResponseSchema

blp = Blueprint("etl", __name__, description="Run control")
# Bodies are decoded by the app's JSON provider, which turns any undecodable body into a 400.
blp.ARGUMENTS_PARSER = AppJSONParser()


@blp.route("/etl/run", methods=["POST"])
@admin_token.required(disabled="run control over HTTP is disabled")  # above the body parsing
@blp.arguments(EtlRunRequestSchema, required=False)
@blp.response(202, EtlRunResponseSchema)
@blp.alt_response(400, schema=ErrorSchema, description="The body is not valid JSON")
@blp.alt_response(401, schema=ErrorSchema, description="No bearer token")
@blp.alt_response(403, schema=ErrorSchema, description="Wrong bearer token")
@blp.alt_response(409, schema=EtlRunResponseSchema, description="Every source is already running")
@blp.alt_response(413, schema=ErrorSchema, description="The body is over 64 KiB")
@blp.alt_response(415, schema=ErrorSchema, description="A body that is not JSON")
@blp.alt_response(
    503,
    schema=ErrorSchema,
    description="Run control is disabled (no ETL_ADMIN_TOKEN), the task queue is unreachable",
)
def start_runs(body):
    """Start a run of each requested source (default all); in-process when there is no broker."""
    if broker_reachable(current_app.extensions["celery"]) is False:
        abort(503, message="the task queue is unreachable; no run was started")
    runs, skipped = [], []
    for source in body["sources"]:
        try:
            run_id, task_id = dispatch_run(source, "api")
        except BrokerUnavailable as exc:
            abort(503, message=f"{exc}; try again once the broker is back")
        except SourceBusy as busy:
            skipped.append(
                {
                    "source": source,
                    "skipped_run_id": busy.skipped_run_id,
                    "running_run_id": busy.running_run_id,
                }
            )
            continue
        runs.append({"source": source, "run_id": run_id, "task_id": task_id})
    eager = current_app.extensions["celery"].conf.task_always_eager
    result = {"runs": runs, "skipped": skipped, "mode": "eager" if eager else "queued"}
    return result, (202 if runs else 409)
