"""``GET /data``: unified observations, filtered and paged."""

import time

from flask import g
from flask_smorest import Blueprint
from flask_smorest.error_handler import ErrorSchema

from kasparro.extensions import db
from kasparro.read.cursors import InvalidCursor
from kasparro.read.observations import page_unified_records
from kasparro.routes.errors import abort_naming
from kasparro.routes.kept_answers import kept_answer
from kasparro.schemas.data import DataPageSchema, DataQuerySchema

blp = Blueprint("data", __name__, description="Unified market observations")


def _meta(started: float) -> dict:
    return {
        "request_id": g.request_id,
        "api_latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


@blp.route("/data")
@blp.response(200, DataPageSchema)
@kept_answer(_meta)
@blp.arguments(DataQuerySchema(), location="query")  # one schema, not one per request
@blp.alt_response(400, schema=ErrorSchema, description="The cursor is not valid")
def list_data(args):
    """List observations, newest first, by page or by cursor."""
    return _page(args)  # without its per-request "meta": what may be kept and served again


def _page(args) -> dict:
    try:
        page = page_unified_records(db.session, args)
    except InvalidCursor as exc:
        abort_naming(400, "query", "cursor", str(exc))
    return {
        "data": page.records,
        "pagination": {
            "page": page.page,
            "page_size": page.page_size,
            "total": page.total,
            "total_is_estimate": page.total_is_estimate,
            "total_pages": page.total_pages,
            "next_cursor": page.next_cursor,
        },
    }
