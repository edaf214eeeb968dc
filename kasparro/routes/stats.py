"""``GET /stats``: per-source totals and run history."""

from flask_smorest import Blueprint

from kasparro.extensions import db
from kasparro.read.sources import source_stats
from kasparro.routes.kept_answers import kept_answer
from kasparro.schemas.stats import StatsSchema

blp = Blueprint("stats", __name__, description="Per-source statistics")


@blp.route("/stats")
@blp.response(200, StatsSchema)
@kept_answer()
def get_stats():
    """Report every source's records, runs, and last success and failure."""
    return _stats()


def _stats() -> dict:
    sources = source_stats(db.session)
    return {
        "total_records": sum(s["total_records"] for s in sources.values()),
        "sources": sources,
        # Clients of the original API read this list; the richer fields are in "sources".
        "stats": [
            {
                "source": name,
                "total_records": stats["total_records"],
                "last_run": last_run_time(stats["last_run"]),
                "status": stats["last_status"],
            }
            for name, stats in sorted(sources.items())
        ],
    }


def last_run_time(run):
    """Return when ``run`` finished, or started while it is still running; None without one."""
    if run is None:
        return None
    return run.finished_at or run.started_at
