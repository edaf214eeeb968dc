"""Maintenance tasks: the retention pass that keeps storage from growing without bound."""

from typing import Any

from celery import shared_task
from flask import current_app

from kasparro.etl.retention import apply_retention
from kasparro.extensions import db


@shared_task(name="etl.retention")
def retention() -> dict[str, Any]:
    """Delete covered raw rows (and observations, if configured) past their age; report it."""
    return apply_retention(db.session, current_app.config).as_dict()
