"""``GET /compare-runs`` and ``GET /anomalies``: run comparison and anomaly flags.

Both answers change only with what the ETL commits, so they are kept like ``/stats``'s
(``kasparro.routes.kept_answers``); the logic is in ``kasparro.read.runs`` and
``kasparro.read.anomalies``.
"""

from flask import current_app
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema

from kasparro.extensions import db
from kasparro.read.anomalies import KINDS, find_anomalies
from kasparro.read.cursors import InvalidCursor
from kasparro.read.run_outliers import Thresholds
from kasparro.read.runs import InvalidComparison, RunNotFound, compare_runs, pick_runs
from kasparro.routes.errors import abort_naming
from kasparro.routes.kept_answers import kept_answer
from kasparro.schemas.analysis import (
    AnomaliesQuerySchema,
    AnomalyPageSchema,
    CompareRunsQuerySchema,
    RunComparisonSchema,
)

blp = Blueprint("analysis", __name__, description="Run comparison and anomaly flags")


@blp.route("/compare-runs")
@blp.response(200, RunComparisonSchema)
@kept_answer()
@blp.arguments(CompareRunsQuerySchema(), location="query")  # one schema, not one per request
@blp.alt_response(404, schema=ErrorSchema, description="A run is unknown, or has no predecessor")
def get_compare_runs(args):
    """Compare two runs of a source: counts, duration, rejected rate, drift and movers."""
    return _comparison(args)


def _comparison(args) -> dict:
    try:
        run_a, run_b = pick_runs(
            db.session, args.get("run_a"), args.get("run_b"), args.get("source")
        )
    except RunNotFound as exc:
        abort(404, message=str(exc))
    except InvalidComparison as exc:
        abort_naming(422, "query", exc.parameter, str(exc))
    return compare_runs(db.session, run_a, run_b, args["top"], args.get("metric"))


@blp.route("/anomalies")
@blp.response(200, AnomalyPageSchema)
@kept_answer()
@blp.arguments(AnomaliesQuerySchema(), location="query")  # one schema, not one per request
@blp.alt_response(400, schema=ErrorSchema, description="The cursor is not valid")
def get_anomalies(args):
    """List runs far from their source's history, value jumps and cross-source disagreements."""
    return _anomalies(args)


def _anomalies(args) -> dict:
    kinds = (args["kind"],) if "kind" in args else KINDS
    thresholds = Thresholds.from_settings(current_app.config)
    try:
        page = find_anomalies(
            db.session,
            since=args.get("since"),
            source=args.get("source"),
            kinds=kinds,
            page_size=args["page_size"],
            thresholds=thresholds,
            cursor=args.get("cursor"),
        )
    except InvalidCursor as exc:
        abort_naming(400, "query", "cursor", str(exc))
    return {
        "anomalies": page.anomalies,
        "since": page.since,
        "source": args.get("source"),
        "kinds": list(kinds),
        "thresholds": thresholds.to_dict(),
        "page_size": args["page_size"],
        "next_cursor": page.next_cursor,
    }
