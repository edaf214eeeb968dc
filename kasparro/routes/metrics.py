"""Prometheus metrics of the API and the Celery workers."""

from flask_smorest import Blueprint

blp = Blueprint(
    "metrics", __name__, description="Prometheus metrics of the API and the Celery workers"
)
