"""``GET /stats``: per-source totals and run history."""

from flask_smorest import Blueprint

from kasparro.extensions import db
from kasparro.queries import source_stats
from kasparro.schemas import StatsSchema

blp = Blueprint("stats", __name__, description="Per-source statistics")


@blp.route("/stats")
@blp.response(200, StatsSchema)
def get_stats():
    """Report every source's records, runs, and last success and failure."""
    sources = source_stats(db.session)
    return {
        "total_records": sum(s["total_records"] for s in sources.values()),
        "sources": sources,
    }
