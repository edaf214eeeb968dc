"""``GET /runs`` and ``GET /runs/<id>``: the run log."""

import sqlalchemy as sa
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema

from kasparro.extensions import db
from kasparro.models import EtlRun
from kasparro.read.runs import MAX_RUN_ID
from kasparro.schemas.runs import RunListSchema, RunSchema, RunsQuerySchema

blp = Blueprint("runs", __name__, description="The ETL run log")


@blp.route("/runs")
@blp.arguments(RunsQuerySchema(), location="query")  # one schema, not one per request
@blp.response(200, RunListSchema)
def list_runs(args):
    """List runs, newest first."""
    query = sa.select(EtlRun).order_by(EtlRun.id.desc()).limit(args["limit"])
    for name in ("source", "status"):
        if name in args:
            query = query.where(getattr(EtlRun, name) == args[name])
    return {"runs": db.session.scalars(query).all()}


@blp.route("/runs/<int:run_id>")
@blp.response(200, RunSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No run has this id")
def get_run(run_id):
    """Show one run: status, counts, checkpoints and error."""
    run = db.session.get(EtlRun, run_id) if run_id <= MAX_RUN_ID else None
    if run is None:
        abort(404, message=f"no run with id {run_id}")
    return run
