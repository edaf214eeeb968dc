"""Comparing two runs of a source, as plain functions over a Session.

Their counts, duration, rejected rate and schema drift side by side, and the assets whose values
moved most between them. The value of an asset's metric *at a run* is the newest observation (by
the source's timestamp, then id) of that metric from the run's source among those stored when
the run finished (``ingested_at`` at or before its ``finished_at``; a run still RUNNING sees
everything stored so far). It is one probe of ``ix_unified_asset_metric_timestamp_id`` per asset
and metric, for each run, in one query.
"""

import json
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.models import EtlRun, RunStatus, UnifiedCount, UnifiedRecord
from kasparro.read.values import (
    exact_context,
    relative_change_percent,
)

FINISHED = (RunStatus.SUCCESS, RunStatus.PARTIAL, RunStatus.FAILED)
# A reprocess re-reads stored rows, not its source: its counts say nothing of the feed's history.
FINISHED_READS = sa.and_(EtlRun.status.in_(FINISHED), EtlRun.trigger != "reprocess")
RUN_COUNTS = ("rows_read", "inserted", "updated", "unchanged", "rejected")
RUN_MEASURES = (*RUN_COUNTS, "duration_ms")
MAX_RUN_ID = 2**31 - 1  # etl_runs.id is a 32-bit integer


class RunNotFound(LookupError):
    """A run asked for does not exist, or a source lacks the finished runs to compare."""


class InvalidComparison(ValueError):
    """Runs that cannot be compared; ``parameter`` names the query argument at fault."""

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter


# --- Comparing two runs -------------------------------------------------------------------


def finished_runs(
    session: Session, source: str, limit: int, before: int | None = None
) -> list[EtlRun]:
    """Return ``source``'s newest ``limit`` finished runs (before run ``before``), newest first."""
    query = sa.select(EtlRun).where(EtlRun.source == source, FINISHED_READS)
    if before is not None:
        query = query.where(EtlRun.id < before)
    return list(session.scalars(query.order_by(EtlRun.id.desc()).limit(limit)))


def _get_run(session: Session, run_id: int, parameter: str) -> EtlRun:
    run = session.get(EtlRun, run_id)
    if run is None:
        raise RunNotFound(f"{parameter}: no run with id {run_id}")
    return run


def pick_runs(
    session: Session, run_a: int | None, run_b: int | None, source: str | None
) -> tuple[EtlRun, EtlRun]:
    """Return the runs to compare, earlier first.

    Neither run given: ``source``'s last two finished runs. Only ``run_b``: it and the finished
    run of its source just before it. ``source``, when given, must be the runs' source.
    """
    if run_a is None and run_b is None:
        if source is None:
            raise InvalidComparison("source", "name a source, or give run_a and run_b")
        newest = finished_runs(session, source, 2)
        if len(newest) < 2:
            raise RunNotFound(f"{source} has {len(newest)} finished run(s); two are compared")
        return newest[1], newest[0]
    if run_b is None:
        raise InvalidComparison("run_b", "run_b is required when run_a is given")
    later = _get_run(session, run_b, "run_b")
    if run_a is None:
        previous = finished_runs(session, later.source, 1, before=later.id)
        if not previous:
            raise RunNotFound(f"run {later.id} has no finished run of {later.source} before it")
        earlier = previous[0]
    else:
        earlier = _get_run(session, run_a, "run_a")
        if earlier.id >= later.id:
            raise InvalidComparison(
                "run_a", f"run_a ({earlier.id}) must be an earlier run than run_b ({later.id})"
            )
    if earlier.source != later.source:
        raise InvalidComparison(
            "run_b",
            f"run {earlier.id} is of {earlier.source} and run {later.id} of {later.source};"
            " only runs of one source are compared",
        )
    if source is not None and source != later.source:
        raise InvalidComparison("source", f"the runs are of {later.source}, not {source}")
    return earlier, later


def rejected_rate(run: EtlRun) -> float | None:
    """Return the share of the records read that were rejected; None when none were read."""
    return run.rejected / run.rows_read if run.rows_read else None


def _difference(a: float | None, b: float | None) -> dict[str, Any]:
    return {"run_a": a, "run_b": b, "difference": None if a is None or b is None else b - a}


def _event_key(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True)


def drift_difference(run_a: EtlRun, run_b: EtlRun) -> dict[str, list[dict[str, Any]]]:
    """Return each run's schema drift events, and those only one of them has."""
    events_a = (run_a.details or {}).get("drift", [])
    events_b = (run_b.details or {}).get("drift", [])
    keys_a = {_event_key(event) for event in events_a}
    keys_b = {_event_key(event) for event in events_b}
    return {
        "run_a": events_a,
        "run_b": events_b,
        "appeared": [event for event in events_b if _event_key(event) not in keys_a],
        "disappeared": [event for event in events_a if _event_key(event) not in keys_b],
    }


def _value_at(run: EtlRun) -> sa.ScalarSelect:
    """Return the newest value of the outer unified_counts row's asset and metric at ``run``."""
    query = sa.select(UnifiedRecord.value).where(
        UnifiedRecord.asset_id == UnifiedCount.asset_id,
        UnifiedRecord.metric == UnifiedCount.metric,
        UnifiedRecord.source == UnifiedCount.source,
    )
    if run.finished_at is not None:
        query = query.where(UnifiedRecord.ingested_at <= run.finished_at)
    return (
        query.order_by(UnifiedRecord.timestamp.desc(), UnifiedRecord.id.desc())
        .limit(1)
        .correlate(UnifiedCount)
        .scalar_subquery()
    )


@dataclass(frozen=True)
class Mover:
    """An asset's metric whose value differs between two runs."""

    asset_id: str
    metric: str
    value_a: Decimal
    value_b: Decimal

    @property
    def change(self) -> Decimal:
        """Return the value at run b minus the value at run a, exactly."""
        with localcontext(exact_context(self.value_a, self.value_b)):
            return self.value_b - self.value_a

    @property
    def change_percent(self) -> float:
        """Return the change in % of the value at run a."""
        return relative_change_percent(self.value_a, self.value_b)


def movers(
    session: Session, run_a: EtlRun, run_b: EtlRun, top: int, metric: str | None = None
) -> tuple[list[Mover], int]:
    """Return the ``top`` values that moved most between the runs, and how many were compared.

    Every asset and metric the source has observations of (from the maintained counts) is
    valued at each run. Those with a value at both runs, the first not zero, are compared;
    those that moved are ranked by |relative change|, then asset id and metric.
    """
    query = sa.select(
        UnifiedCount.asset_id,
        UnifiedCount.metric,
        _value_at(run_a).label("value_a"),
        _value_at(run_b).label("value_b"),
    ).where(UnifiedCount.source == run_b.source, UnifiedCount.records > 0)
    if metric is not None:
        query = query.where(UnifiedCount.metric == metric)
    compared = [
        Mover(*row)
        for row in session.execute(query)
        if row.value_a is not None and row.value_b is not None and row.value_a != 0
    ]
    moved = [mover for mover in compared if mover.change != 0]
    moved.sort(key=lambda m: (-abs(m.change / m.value_a), m.asset_id, m.metric))
    return moved[:top], len(compared)


def compare_runs(
    session: Session, run_a: EtlRun, run_b: EtlRun, top: int, metric: str | None = None
) -> dict[str, Any]:
    """Return how run_b differs from run_a: counts, duration, rejected rate, drift, movers."""
    ranked, compared = movers(session, run_a, run_b, top, metric)
    return {
        "source": run_b.source,
        "run_a": run_a,
        "run_b": run_b,
        "counts": {
            name: _difference(getattr(run_a, name), getattr(run_b, name)) for name in RUN_COUNTS
        },
        "duration_ms": _difference(run_a.duration_ms, run_b.duration_ms),
        "rejected_rate": _difference(rejected_rate(run_a), rejected_rate(run_b)),
        "drift": drift_difference(run_a, run_b),
        "movers": [
            {
                "asset_id": mover.asset_id,
                "metric": mover.metric,
                "value_a": mover.value_a,
                "value_b": mover.value_b,
                "change": mover.change,
                "change_percent": mover.change_percent,
            }
            for mover in ranked
        ],
        "movers_compared": compared,
    }
