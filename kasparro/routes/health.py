"""``GET /health``: the database, the broker and the last runs."""

import structlog
from flask import current_app
from flask_smorest import Blueprint
from sqlalchemy.exc import SQLAlchemyError

from kasparro.celery_app import broker_reachable
from kasparro.extensions import db
from kasparro.models import RunStatus
from kasparro.read.sources import source_health
from kasparro.routes.kept_answers import kept_value
from kasparro.schemas.health import HealthSchema

blp = Blueprint("health", __name__, description="Service health")
log = structlog.get_logger(__name__)


@blp.route("/health")
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema, description="The database is unreachable")
def get_health():
    """Report whether the database and the broker answer and how each source's last run went."""
    broker_connected = broker_reachable(current_app.extensions["celery"])
    try:
        # Kept like /data's answers: every change of a run moves the data version. The version
        # is read at most every VERSION_READ_SECONDS, so a database that stops answering shows
        # within that.
        runs = kept_value(_runs_part)
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("health.database_unreachable", error=type(exc).__name__)
        return {
            "status": "unhealthy",
            "database_connected": False,
            "broker_connected": broker_connected,
            "last_etl_run": None,
            "sources": {},
        }, 503
    failing = any(run["status"] == RunStatus.FAILED for run in runs["sources"].values())
    return {
        "status": "degraded" if failing or broker_connected is False else "healthy",
        "database_connected": True,
        "broker_connected": broker_connected,
        **runs,
    }


def _runs_part() -> dict:
    newest, last_runs = source_health(db.session)
    return {
        "last_etl_run": newest
        and {
            "timestamp": newest.finished_at or newest.started_at,
            "status": newest.status,
            "records_processed": newest.rows_read,
        },
        "sources": {
            name: {"status": run.status, "finished_at": run.finished_at, "error": run.error}
            for name, run in last_runs.items()
        },
    }
