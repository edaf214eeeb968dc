"""Run comparison and anomaly flags, as plain functions over a Session.

Comparing two runs of a source: their counts, duration, rejected rate and schema drift side by
side, and the assets whose values moved most between them. The value of an asset's metric *at a
run* is the newest observation (by the source's timestamp, then id) of that metric from the
run's source among those stored when the run finished (``ingested_at`` at or before its
``finished_at``; a run still RUNNING sees everything stored so far). It is one probe of
``ix_unified_asset_metric_timestamp_id`` per asset and metric, for each run, in one query.

Anomalies, in three kinds, each with what was flagged, why, and a score:

- ``run_outlier``: a finished run whose count or duration is far from the source's recent
  history, by the robust z-score 0.6745·(x − median)/MAD over the previous finished runs;
- ``value_jump``: an observation that moved implausibly from the previous observation of the
  same asset's metric from the same source; the score is the relative change in %;
- ``source_disagreement``: the latest values of an asset's metric across sources spread wider
  than a share of their median; the score is that spread in %.

A page walks the kinds in that order, each in an order served by an index, and reads a bounded
amount of each (``RUNS_PER_PAGE``, ``JUMP_ROWS_PER_PAGE``, ``PAIRS_PER_PAGE``): a page may hold
fewer anomalies than asked while ``next_cursor`` says there is more to look at.
"""

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from itertools import groupby
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from marshmallow import Schema, ValidationError, fields, post_load, validate
from sqlalchemy.orm import Session, aliased

from kasparro.asset_values import (
    LatestValue,
    consensus,
    exact_context,
    latest_values,
    relative_change_percent,
)
from kasparro.input_fields import AwareDateTime, Text, WholeNumber
from kasparro.models import EtlRun, RunStatus, UnifiedCount, UnifiedRecord
from kasparro.queries import MAX_ID, InvalidCursor, pack_cursor, unpack_cursor

FINISHED = (RunStatus.SUCCESS, RunStatus.PARTIAL, RunStatus.FAILED)
# A reprocess re-reads stored rows, not its source: its counts say nothing of the feed's history.
FINISHED_READS = sa.and_(EtlRun.status.in_(FINISHED), EtlRun.trigger != "reprocess")
RUN_COUNTS = ("rows_read", "inserted", "updated", "unchanged", "rejected")
RUN_MEASURES = (*RUN_COUNTS, "duration_ms")
KINDS = ("run_outlier", "value_jump", "source_disagreement")
MAX_RUN_ID = 2**31 - 1  # etl_runs.id is a 32-bit integer

# 0.6745 is the normal distribution's third quartile: MAD/0.6745 estimates the standard
# deviation. When MAD is 0 (over half the history equal), the mean absolute deviation stands in,
# scaled by sqrt(pi/2) = 1.253314 for the same reason.
MAD_SCALE = 0.6745
MEAN_AD_SCALE = 1.253314
MIN_HISTORY_RUNS = 5  # fewer earlier finished runs (or ANOMALY_HISTORY_RUNS, if less): not judged
DEFAULT_WINDOW = timedelta(hours=24)  # /anomalies without ``since`` looks this far back

# What one page reads at most, per kind: finished runs judged, observations read in
# (timestamp, id) order, and (asset, metric) pairs with values from two sources or more.
RUNS_PER_PAGE = 200
JUMP_ROWS_PER_PAGE = 2000
PAIRS_PER_PAGE = 200


class RunNotFound(LookupError):
    """A run asked for does not exist, or a source lacks the finished runs to compare."""


class InvalidComparison(ValueError):
    """Runs that cannot be compared; ``parameter`` names the query argument at fault."""

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class Thresholds:
    """When a run, a move or a spread is flagged, from the ANOMALY_* settings."""

    mad: float
    history_runs: int
    jump_percent: float
    spread_percent: float

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "Thresholds":
        """Read the thresholds from the app's settings."""
        return cls(
            mad=float(settings["ANOMALY_MAD_THRESHOLD"]),
            history_runs=int(settings["ANOMALY_HISTORY_RUNS"]),
            jump_percent=float(settings["ANOMALY_JUMP_PERCENT"]),
            spread_percent=float(settings["ANOMALY_SPREAD_PERCENT"]),
        )

    def to_dict(self) -> dict[str, float]:
        """Return the thresholds as the API shows them."""
        return {
            "mad": self.mad,
            "history_runs": self.history_runs,
            "jump_percent": self.jump_percent,
            "spread_percent": self.spread_percent,
        }


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


# --- Robust statistics ----------------------------------------------------------------------


@dataclass(frozen=True)
class RobustScore:
    """How far a value is from a history: the robust z-score and what it was computed from."""

    score: float
    median: float
    mad: float
    mean_absolute_deviation: float
    scale: str  # which spread the score is measured in: "mad", "mean_ad" or "unit"


def robust_score(value: float, history: Sequence[float]) -> RobustScore:
    """Return the robust z-score of ``value`` against ``history`` (not empty).

    0.6745·(x − median)/MAD. When MAD is 0, (x − median)/(1.253314·MeanAD). When both are 0
    the history is constant: MAD is taken as one unit (one row, one millisecond), so a value
    equal to it scores 0 and one that differs by d scores 0.6745·d; the score stays finite.
    """
    median = statistics.median(history)
    deviations = [abs(x - median) for x in history]
    mad = statistics.median(deviations)
    mean_ad = statistics.fmean(deviations)
    if mad:
        score, scale = MAD_SCALE * (value - median) / mad, "mad"
    elif mean_ad:
        score, scale = (value - median) / (MEAN_AD_SCALE * mean_ad), "mean_ad"
    else:
        score, scale = MAD_SCALE * (value - median), "unit"
    return RobustScore(float(score), float(median), float(mad), float(mean_ad), scale)


_SCALE_TEXT = {
    "mad": "MAD {mad:g}",
    "mean_ad": "MAD 0, mean absolute deviation {mean_ad:g}",
    "unit": "constant history, MAD taken as 1",
}


def judge_run(
    run: EtlRun, measure: str, history: Sequence[EtlRun], thresholds: Thresholds
) -> dict[str, Any] | None:
    """Return the anomaly ``run``'s ``measure`` is against ``history``, or None when it is not one.

    A run with fewer than MIN_HISTORY_RUNS earlier finished runs (or ANOMALY_HISTORY_RUNS, when
    smaller) is not judged.
    """
    value = getattr(run, measure)
    values = [getattr(past, measure) for past in history if getattr(past, measure) is not None]
    if value is None or len(values) < min(MIN_HISTORY_RUNS, thresholds.history_runs):
        return None
    scored = robust_score(value, values)
    if abs(scored.score) <= thresholds.mad:
        return None
    spread = _SCALE_TEXT[scored.scale].format(
        mad=scored.mad, mean_ad=scored.mean_absolute_deviation
    )
    return {
        "kind": "run_outlier",
        "source": run.source,
        "at": run.finished_at,
        "score": scored.score,
        "threshold": thresholds.mad,
        "reason": (
            f"{measure} of run {run.id} was {value} against a median of {scored.median:g} over"
            f" the {len(values)} previous finished runs of {run.source} ({spread}):"
            f" robust z-score {scored.score:.2f}, beyond ±{thresholds.mad:g}"
        ),
        "run": {
            "run_id": run.id,
            "status": run.status,
            "measure": measure,
            "value": value,
            "median": scored.median,
            "mad": scored.mad,
            "mean_absolute_deviation": scored.mean_absolute_deviation,
            "scale": scored.scale,
            "history_runs": len(values),
        },
    }


# --- Paging anomalies -----------------------------------------------------------------------


@dataclass(frozen=True)
class AnomalyQuery:
    """What to look for: since when, from which source (None: all), and the thresholds."""

    since: datetime
    source: str | None
    thresholds: Thresholds


@dataclass(frozen=True)
class Step:
    """One thing looked at in a kind's order: where it is, and the anomaly it is, if it is one."""

    position: list[Any]
    anomaly: dict[str, Any] | None


@dataclass
class Scan:
    """What one page looked at of one kind, and whether that kind has nothing past it."""

    steps: list[Step] = field(default_factory=list)
    complete: bool = True


@dataclass(frozen=True)
class AnomalyPage:
    """A page of anomalies, and the cursor of the next one (None at the end)."""

    anomalies: list[dict[str, Any]]
    since: datetime
    next_cursor: str | None


def _histories(session: Session, runs: Sequence[EtlRun], size: int) -> dict[int, list[EtlRun]]:
    """Return, for each run, up to ``size`` finished runs of its source before it, oldest first."""
    histories = {}
    ordered = sorted(runs, key=lambda run: (run.source, run.id))
    for source, judged in groupby(ordered, key=lambda run: run.source):
        judged = list(judged)
        first, last = judged[0].id, judged[-1].id
        of_source = sa.select(EtlRun).where(EtlRun.source == source, FINISHED_READS)
        earlier = session.scalars(
            of_source.where(EtlRun.id < first).order_by(EtlRun.id.desc()).limit(size)
        ).all()
        # Every finished run in the judged range, those finished before ``since`` included.
        spanned = session.scalars(
            of_source.where(EtlRun.id.between(first, last)).order_by(EtlRun.id)
        ).all()
        chain = [*reversed(earlier), *spanned]
        for index, run in enumerate(chain):
            histories[run.id] = chain[max(0, index - size) : index]
    return histories


def _scan_runs(session: Session, query: AnomalyQuery, position: list[Any] | None) -> Scan:
    """Judge finished runs that ended at or after ``since``, newest first, measure by measure."""
    selected = sa.select(EtlRun).where(FINISHED_READS, EtlRun.finished_at >= query.since)
    if query.source is not None:
        selected = selected.where(EtlRun.source == query.source)
    if position is not None:
        run_id, measure = position
        # The run of the position again while it has measures left, else the runs before it.
        more = measure < len(RUN_MEASURES) - 1
        selected = selected.where(EtlRun.id <= run_id if more else EtlRun.id < run_id)
    runs = session.scalars(selected.order_by(EtlRun.id.desc()).limit(RUNS_PER_PAGE)).all()
    histories = _histories(session, runs, query.thresholds.history_runs)
    scan = Scan(complete=len(runs) < RUNS_PER_PAGE)
    for run in runs:
        for index, measure in enumerate(RUN_MEASURES):
            if position is not None and run.id == position[0] and index <= position[1]:
                continue  # shown on an earlier page
            anomaly = judge_run(run, measure, histories[run.id], query.thresholds)
            scan.steps.append(Step([run.id, index], anomaly))
    return scan


def _jump(row: sa.Row, previous: sa.Row | None, thresholds: Thresholds) -> dict[str, Any] | None:
    if previous is None or previous.value == 0:
        return None  # a first observation, or a move from zero, has no relative size
    change = relative_change_percent(previous.value, row.value)
    if abs(change) <= thresholds.jump_percent:
        return None
    return {
        "kind": "value_jump",
        "source": row.source,
        "at": row.timestamp,
        "score": change,
        "threshold": thresholds.jump_percent,
        "reason": (
            f"{row.metric} of {row.asset_id} from {row.source} moved from {previous.value:f}"
            f" at {previous.timestamp.isoformat()} to {row.value:f} at"
            f" {row.timestamp.isoformat()}: {change:+.2f}%, beyond ±{thresholds.jump_percent:g}%"
        ),
        "jump": {
            "asset_id": row.asset_id,
            "metric": row.metric,
            "record_id": row.id,
            "value": row.value,
            "timestamp": row.timestamp,
            "previous_record_id": previous.id,
            "previous_value": previous.value,
            "previous_timestamp": previous.timestamp,
        },
    }


def _scan_jumps(session: Session, query: AnomalyQuery, position: list[Any] | None) -> Scan:
    """Compare observations at or after ``since``, newest first, with the one before each.

    The observations are read in the order of ``ix_unified_source_timestamp_id`` (or of
    ``ix_unified_timestamp_id`` without a source); the one before each is one probe of
    ``ix_unified_asset_metric_timestamp_id``, and those are then read by primary key.
    Unresolved observations (no asset) are left out.
    """
    current, earlier = aliased(UnifiedRecord), aliased(UnifiedRecord)
    previous_id = (
        sa.select(earlier.id)
        .where(
            earlier.asset_id == current.asset_id,
            earlier.metric == current.metric,
            earlier.source == current.source,
            sa.tuple_(earlier.timestamp, earlier.id) < sa.tuple_(current.timestamp, current.id),
        )
        .order_by(earlier.timestamp.desc(), earlier.id.desc())
        .limit(1)
        .correlate(current)
        .scalar_subquery()
    )
    read = sa.select(
        current.id,
        current.source,
        current.asset_id,
        current.metric,
        current.value,
        current.timestamp,
        previous_id.label("previous_id"),
    ).where(current.timestamp >= query.since, current.asset_id.is_not(None))
    if query.source is not None:
        read = read.where(current.source == query.source)
    if position is not None:
        timestamp, record_id = position
        read = read.where(sa.tuple_(current.timestamp, current.id) < (timestamp, record_id))
    rows = session.execute(
        read.order_by(current.timestamp.desc(), current.id.desc()).limit(JUMP_ROWS_PER_PAGE)
    ).all()
    # By primary key, in a query of its own: joined, the planner may hash the whole table.
    wanted = [row.previous_id for row in rows if row.previous_id is not None]
    previous = {
        row.id: row
        for row in session.execute(
            sa.select(UnifiedRecord.id, UnifiedRecord.value, UnifiedRecord.timestamp).where(
                UnifiedRecord.id.in_(wanted)
            )
        )
    }
    return Scan(
        [
            Step(
                [row.timestamp.isoformat(), row.id],
                _jump(row, previous.get(row.previous_id), query.thresholds),
            )
            for row in rows
        ],
        complete=len(rows) < JUMP_ROWS_PER_PAGE,
    )


def _disagreement(
    asset_id: str, metric: str, latest: Sequence[LatestValue], query: AnomalyQuery
) -> dict[str, Any] | None:
    values = [v for v in latest if v.metric == metric and v.timestamp >= query.since]
    if len(values) < 2 or (query.source and all(v.source != query.source for v in values)):
        return None
    agreed = consensus([v.value for v in values])
    limit = query.thresholds.spread_percent
    if agreed.spread_percent is None or agreed.spread_percent <= limit:
        return None  # a zero median has no spread in %
    low = min(values, key=lambda v: (v.value, v.source))
    high = max(values, key=lambda v: (v.value, v.source))
    return {
        "kind": "source_disagreement",
        "source": None,
        "at": max(v.timestamp for v in values),
        "score": agreed.spread_percent,
        "threshold": limit,
        "reason": (
            f"the latest {metric} of {asset_id} ranges from {low.value:f} ({low.source}) to"
            f" {high.value:f} ({high.source}) across {len(values)} sources: a spread of"
            f" {agreed.spread_percent:.2f}% of the median {agreed.median:f}, beyond {limit:g}%"
        ),
        "disagreement": {
            "asset_id": asset_id,
            "metric": metric,
            "median": agreed.median,
            "low": agreed.low,
            "high": agreed.high,
            "values": [
                {"source": v.source, "value": v.value, "timestamp": v.timestamp} for v in values
            ],
        },
    }


def _scan_disagreements(session: Session, query: AnomalyQuery, position: list[Any] | None) -> Scan:
    """Compare the latest values across sources of each asset's metric two sources observe.

    The pairs come from the maintained counts, in (asset, metric) order; each asset's latest
    values are one query of index probes (``kasparro.asset_values.latest_values``). Values
    observed before ``since`` are left out: a source that stopped long ago does not disagree.
    """
    pairs = (
        sa.select(UnifiedCount.asset_id, UnifiedCount.metric)
        .where(UnifiedCount.records > 0)
        .group_by(UnifiedCount.asset_id, UnifiedCount.metric)
        .having(sa.func.count() >= 2)
    )
    if position is not None:
        pairs = pairs.where(sa.tuple_(UnifiedCount.asset_id, UnifiedCount.metric) > tuple(position))
    pairs = session.execute(
        pairs.order_by(UnifiedCount.asset_id, UnifiedCount.metric).limit(PAIRS_PER_PAGE)
    ).all()
    scan = Scan(complete=len(pairs) < PAIRS_PER_PAGE)
    for asset_id, of_asset in groupby(pairs, key=itemgetter(0)):
        metrics = [metric for _, metric in of_asset]
        latest = latest_values(session, asset_id, metrics)
        for metric in metrics:
            anomaly = _disagreement(asset_id, metric, latest, query)
            scan.steps.append(Step([asset_id, metric], anomaly))
    return scan


SCANS: dict[str, Callable[[Session, AnomalyQuery, list[Any] | None], Scan]] = {
    "run_outlier": _scan_runs,
    "value_jump": _scan_jumps,
    "source_disagreement": _scan_disagreements,
}


def encode_cursor(kind: str, position: list[Any], since: datetime) -> str:
    """Return an opaque cursor: the kind, the position in its order, and the window's start."""
    return pack_cursor({"k": kind, "p": position, "s": since.isoformat()})


# Where a page stopped, in each kind's order: (run id, measure index), (timestamp, record id) and
# (asset id, metric); checked like query arguments, for a client can forge a cursor.
POSITIONS = {
    "run_outlier": fields.Tuple(
        (WholeNumber(0, MAX_RUN_ID), WholeNumber(0, len(RUN_MEASURES))), required=True
    ),
    "value_jump": fields.Tuple((AwareDateTime(), WholeNumber(0, MAX_ID)), required=True),
    "source_disagreement": fields.Tuple(
        (
            Text(max_length=UnifiedRecord.asset_id.type.length),
            Text(max_length=UnifiedRecord.metric.type.length),
        ),
        required=True,
    ),
}


class AnomalyPosition(Schema):
    """An anomaly cursor's contents: the kind, the position in its order, the window's start."""

    k = fields.String(required=True, validate=validate.OneOf(KINDS))
    p = fields.Raw(required=True)
    s = AwareDateTime(required=True)

    @post_load
    def typed_position(self, data: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Check the position as its kind's fields, and return it with their types."""
        try:
            data["p"] = list(POSITIONS[data["k"]].deserialize(data["p"]))
        except ValidationError as exc:
            raise ValidationError(exc.messages, "p") from None
        return data


ANOMALY_POSITION = AnomalyPosition()


def decode_cursor(cursor: str, kinds: Sequence[str]) -> tuple[str, list[Any], datetime]:
    """Return the kind, position and window start of a cursor issued for these ``kinds``."""
    contents = unpack_cursor(cursor, ANOMALY_POSITION)
    if contents["k"] not in kinds:
        raise InvalidCursor("cursor is not one this server issued for this kind")
    return contents["k"], contents["p"], contents["s"]


def find_anomalies(
    session: Session,
    *,
    since: datetime | None,
    source: str | None,
    kinds: Sequence[str],
    page_size: int,
    thresholds: Thresholds,
    cursor: str | None = None,
    now: datetime | None = None,
) -> AnomalyPage:
    """Return a page of anomalies, kind by kind in KINDS' order, each in its own order.

    ``since`` defaults to DEFAULT_WINDOW before ``now``; a cursor keeps the window of the page
    that issued it. Orders: runs newest first, then measure; jumps by (timestamp, id) newest
    first; disagreements by (asset, metric).
    """
    kinds = tuple(kind for kind in KINDS if kind in kinds)
    start, position = kinds[0], None
    if cursor is not None:
        start, position, since = decode_cursor(cursor, kinds)
    elif since is None:
        since = (now or datetime.now(UTC)) - DEFAULT_WINDOW
    query = AnomalyQuery(since, source, thresholds)
    found: list[dict[str, Any]] = []
    for kind in kinds[kinds.index(start) :]:
        scan = SCANS[kind](session, query, position if kind == start else None)
        for step in scan.steps:
            if step.anomaly is not None:
                found.append(step.anomaly)
                if len(found) == page_size:
                    return AnomalyPage(found, since, encode_cursor(kind, step.position, since))
        if not scan.complete:
            return AnomalyPage(found, since, encode_cursor(kind, scan.steps[-1].position, since))
    return AnomalyPage(found, since, None)
