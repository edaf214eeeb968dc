"""Per-source statistics and health, as /stats and /health serve them.

Both read the aggregates the database maintains (migration 0006): no request counts or groups a
whole table.
"""

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.etl.sources import SOURCES
from kasparro.models import (
    EtlRun,
    RejectedCount,
    RunSummary,
    UnifiedTotal,
)


def run_summaries(session: Session) -> dict[str, tuple[RunSummary, EtlRun | None]]:
    """Return each source's maintained run summary with its newest run, found by primary key."""
    summaries = session.scalars(sa.select(RunSummary)).all()
    # Two small queries rather than a join: a join's plan depends on the summaries' statistics.
    ids = [summary.last_run_id for summary in summaries if summary.last_run_id is not None]
    runs = {run.id: run for run in session.scalars(sa.select(EtlRun).where(EtlRun.id.in_(ids)))}
    return {summary.source: (summary, runs.get(summary.last_run_id)) for summary in summaries}


def source_health(session: Session) -> tuple[EtlRun | None, dict[str, EtlRun]]:
    """Return the newest run overall and the newest run of each source.

    A SKIPPED attempt did no work: the run it collided with is the one that tells the state.
    """
    last_runs = {source: run for source, (_, run) in run_summaries(session).items() if run}
    newest = max(last_runs.values(), key=lambda run: run.id, default=None)
    return newest, last_runs


def source_stats(session: Session) -> dict[str, dict[str, Any]]:
    """Return totals and run history for every source, from the maintained aggregates."""
    totals = {
        source: (int(records), int(unresolved))
        for source, records, unresolved in session.execute(
            sa.select(
                UnifiedTotal.source,
                sa.func.sum(UnifiedTotal.records),
                sa.func.sum(UnifiedTotal.unresolved),
            ).group_by(UnifiedTotal.source)
        )
    }
    rejected = {
        source: records
        for source, records in session.execute(
            sa.select(RejectedCount.source, RejectedCount.records)
        )
    }
    summaries = run_summaries(session)
    stats = {}
    for name in SOURCES:
        records, unresolved = totals.get(name, (0, 0))
        summary, last_run = summaries.get(name, (None, None))
        stats[name] = {
            "total_records": records,
            "unresolved_records": unresolved,
            "rejected_records": rejected.get(name, 0),
            "records_processed": summary.records_processed if summary else 0,
            "last_run": last_run,
            "last_status": getattr(last_run, "status", None),
            "last_duration_ms": getattr(last_run, "duration_ms", None),
            "last_success_at": getattr(summary, "last_success_at", None),
            "last_failure_at": getattr(summary, "last_failure_at", None),
            "run_counts": summary.run_counts() if summary else {},
        }
    return stats
