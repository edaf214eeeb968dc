"""``GET /data``: unified observations, filtered and paged."""

import time

from flask import g
from flask_smorest import Blueprint, abort

from kasparro.extensions import db
from kasparro.queries import InvalidCursor, page_unified_records
from kasparro.schemas import DataPageSchema, DataQuerySchema

blp = Blueprint("data", __name__, description="Unified market observations")


@blp.route("/data")
@blp.arguments(DataQuerySchema, location="query")
@blp.response(200, DataPageSchema)
def list_data(args):
    """List observations, newest first, by page or by cursor."""
    started = time.perf_counter()
    try:
        page = page_unified_records(db.session, args)
    except InvalidCursor as exc:
        abort(400, message=str(exc), errors={"query": {"cursor": [str(exc)]}})
    return {
        "data": page.records,
        "pagination": {
            "page": page.page,
            "page_size": page.page_size,
            "total": page.total,
            "total_pages": page.total_pages,
            "next_cursor": page.next_cursor,
        },
        "meta": {
            "request_id": g.request_id,
            "api_latency_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    }
