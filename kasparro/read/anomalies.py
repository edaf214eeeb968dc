"""Anomaly flags, in three kinds, each with what was flagged, why, and a score.

- ``run_outlier``: a finished run whose count or duration is far from the source's recent
  history (``kasparro.read.run_outliers``);
- ``value_jump``: an observation that moved implausibly from the previous observation of the
  same asset's metric from the same source; the score is the relative change in %;
- ``source_disagreement``: the latest values of an asset's metric across sources spread wider
  than a share of their median; the score is that spread in %.

A page walks the kinds in that order, each in an order served by an index, and reads a bounded
amount of each (``RUNS_PER_PAGE``, ``JUMP_ROWS_PER_PAGE``, ``PAIRS_PER_PAGE``): a page may hold
fewer anomalies than asked while ``next_cursor`` says there is more to look at.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from marshmallow import Schema, ValidationError, fields, post_load, validate
from sqlalchemy.orm import Session, aliased

from kasparro.input_fields import AwareDateTime, Text, WholeNumber
from kasparro.models import EtlRun, UnifiedCount, UnifiedRecord
from kasparro.read.cursors import MAX_ID, InvalidCursor, pack_cursor, unpack_cursor
from kasparro.read.run_outliers import Thresholds, judge_run
from kasparro.read.runs import FINISHED_READS, MAX_RUN_ID, RUN_MEASURES
from kasparro.read.values import (
    LatestValue,
    consensus,
    latest_values,
    relative_change_percent,
)

KINDS = ("run_outlier", "value_jump", "source_disagreement")
DEFAULT_WINDOW = timedelta(hours=24)  # /anomalies without ``since`` looks this far back

# What one page reads at most, per kind: finished runs judged, observations read in
# (timestamp, id) order, and (asset, metric) pairs with values from two sources or more.
RUNS_PER_PAGE = 200
JUMP_ROWS_PER_PAGE = 2000
PAIRS_PER_PAGE = 200


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


def _previous_observation_id(current: type[UnifiedRecord]) -> sa.ScalarSelect:
    """Return the id of the observation before ``current`` of its asset's metric and source."""
    earlier = aliased(UnifiedRecord)
    return (
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


def _values_by_id(session: Session, ids: Sequence[int | None]) -> dict[int, sa.Row]:
    """Return the id, value and timestamp of each observation of ``ids``, by id."""
    # By primary key, in a query of its own: joined, the planner may hash the whole table.
    wanted = [record_id for record_id in ids if record_id is not None]
    return {
        row.id: row
        for row in session.execute(
            sa.select(UnifiedRecord.id, UnifiedRecord.value, UnifiedRecord.timestamp).where(
                UnifiedRecord.id.in_(wanted)
            )
        )
    }


def _scan_jumps(session: Session, query: AnomalyQuery, position: list[Any] | None) -> Scan:
    """Compare observations at or after ``since``, newest first, with the one before each.

    The observations are read in the order of ``ix_unified_source_timestamp_id`` (or of
    ``ix_unified_timestamp_id`` without a source); the one before each is one probe of
    ``ix_unified_asset_metric_timestamp_id``, and those are then read by primary key.
    Unresolved observations (no asset) are left out.
    """
    current = aliased(UnifiedRecord)
    previous_id = _previous_observation_id(current)
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
    previous = _values_by_id(session, [row.previous_id for row in rows])
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
    values are one query of index probes (``kasparro.read.values.latest_values``). Values
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
