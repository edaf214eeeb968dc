"""``GET /metrics``: Prometheus metrics of the API (every gunicorn worker) and its database.

The Celery worker serves its own on ``WORKER_METRICS_PORT`` (kasparro/celery_app.py); in the
embedded mode tasks run in this process, so their metrics are here. METRICS_TOKEN and
METRICS_ALLOWED_NETWORKS keep them to Prometheus (kasparro/access.py).

The WSGI server tells on each request whether other processes serve the app too
(``wsgi.multiprocess``: ``gunicorn -w 2``). Without a directory they share, each would serve its
own counts, so one scrape in two would miss what the other counted: /metrics answers 503 with the
reason, and each process warns at its first request, the first moment it can tell.
"""

import structlog
from flask import Response, request
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema
from sqlalchemy.exc import SQLAlchemyError

from kasparro.access import require_metrics_access
from kasparro.etl.sources import SOURCES
from kasparro.extensions import db
from kasparro.metrics import (
    CONTENT_TYPE,
    NOT_SHARED_MESSAGE,
    database_facts,
    exposition,
    split_between_processes,
)

log = structlog.get_logger(__name__)
blp = Blueprint(
    "metrics", __name__, description="Prometheus metrics of the API and the Celery workers"
)
TEXT = {"type": "string"}
_warned = False  # this process has said its metrics would be split


def metrics_split() -> bool:
    """Return whether this request's server runs processes whose metrics are kept apart."""
    return split_between_processes(bool(request.environ.get("wsgi.multiprocess")))


@blp.before_app_request
def warn_of_split_metrics() -> None:
    """Warn once per process, at its first request, that its metrics cannot be served whole."""
    global _warned
    if not _warned:
        _warned = True
        if metrics_split():
            log.warning("metrics.not_shared", message=NOT_SHARED_MESSAGE)


@blp.route("/metrics")
@blp.response(200, TEXT, content_type="text/plain", description="Prometheus text format 0.0.4")
@blp.alt_response(401, schema=ErrorSchema, description="METRICS_TOKEN is set: no bearer token")
@blp.alt_response(
    403,
    schema=ErrorSchema,
    description="A wrong bearer token, or a client outside METRICS_ALLOWED_NETWORKS",
)
@blp.alt_response(
    503,
    schema=ErrorSchema,
    description="Server processes share no PROMETHEUS_MULTIPROC_DIR: each would serve a part",
)
def get_metrics():
    """Report the API's request, ETL and upstream metrics, and the rows each source has."""
    require_metrics_access()
    if metrics_split():
        abort(503, message=NOT_SHARED_MESSAGE)
    try:
        facts = database_facts(db.session, SOURCES)
    except SQLAlchemyError as exc:
        # The metrics of the processes still tell what happened: serve them without the rows.
        db.session.rollback()
        log.warning("metrics.database_unavailable", error=type(exc).__name__)
        facts = None
    return Response(exposition(facts), content_type=CONTENT_TYPE)
