"""``GET /metrics``: Prometheus metrics of the API (every gunicorn worker) and its database.

The Celery worker serves its own on ``WORKER_METRICS_PORT`` (kasparro/celery_app.py); in the
embedded mode tasks run in this process, so their metrics are here.
"""

import structlog
from flask import Response
from flask_smorest import Blueprint
from sqlalchemy.exc import SQLAlchemyError

from kasparro.etl.sources import SOURCES
from kasparro.extensions import db
from kasparro.metrics import CONTENT_TYPE, database_facts, exposition

log = structlog.get_logger(__name__)
blp = Blueprint(
    "metrics", __name__, description="Prometheus metrics of the API and the Celery workers"
)
TEXT = {"type": "string"}


@blp.route("/metrics")
@blp.response(200, TEXT, content_type="text/plain", description="Prometheus text format 0.0.4")
def get_metrics():
    """Report the API's request, ETL and upstream metrics, and the rows each source has."""
    try:
        facts = database_facts(db.session, SOURCES)
    except SQLAlchemyError as exc:
        # The metrics of the processes still tell what happened: serve them without the rows.
        db.session.rollback()
        log.warning("metrics.database_unavailable", error=type(exc).__name__)
        facts = None
    return Response(exposition(facts), content_type=CONTENT_TYPE)
