"""An asset's latest value per source and metric, and the consensus of those values.

Both the asset views and the cross-source anomaly check read them. The latest value of one
(asset, metric, source) is one probe of ``ix_unified_asset_metric_timestamp_id`` read backwards;
the pairs probed come from ``unified_totals``, which the database keeps small and exact.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal, localcontext

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.models import UnifiedRecord, UnifiedTotal

DEFAULT_PRECISION = 28  # the decimal module's default context


@dataclass(frozen=True)
class LatestValue:
    """The newest observation of one metric of one asset from one source."""

    asset_id: str
    source: str
    metric: str
    value: Decimal
    timestamp: datetime


@dataclass(frozen=True)
class Consensus:
    """What the sources agree on: the median, the range, and the spread as a % of the median."""

    median: Decimal
    low: Decimal
    high: Decimal
    spread_percent: float | None  # None with one value (nothing to compare) or a zero median
    sources: int


def exact_context(*values: Decimal) -> Context:
    """Return a decimal context in which the sum, difference or half of two of ``values`` is exact.

    Stored values have up to 70 digits (kasparro.etl.parsing): the default context's 28 would
    round them. The precision spans every digit the operands hold, one more for a carry and one
    more for a half; a quotient is then rounded to that many digits, far more than a float holds.
    """
    highest = max((value.adjusted() for value in values), default=0)
    lowest = min((value.as_tuple().exponent for value in values), default=0)
    return Context(prec=max(DEFAULT_PRECISION, highest - min(lowest, 0) + 3))


def relative_change_percent(before: Decimal, after: Decimal) -> float:
    """Return how far ``after`` is from ``before``, in % of ``before`` (which is not zero)."""
    with localcontext(exact_context(before, after)):
        return float((after - before) / abs(before) * 100)


def consensus(values: Sequence[Decimal]) -> Consensus | None:
    """Return the median, range and spread of ``values``, or None when there are none.

    The median of an even count is the exact midpoint of the two middle values.
    """
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    low, high = ordered[0], ordered[-1]
    with localcontext(exact_context(*ordered)):
        median = (
            ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        )
        compared = len(ordered) > 1 and median
        spread = float((high - low) / abs(median) * 100) if compared else None
    return Consensus(median, low, high, spread, len(ordered))


def source_metric_pairs(session: Session, metrics: Iterable[str] | None = None) -> list[tuple]:
    """Return every (source, metric) pair with observations, from the maintained totals."""
    query = sa.select(UnifiedTotal.source, UnifiedTotal.metric).where(UnifiedTotal.records > 0)
    if metrics is not None:
        query = query.where(UnifiedTotal.metric.in_(list(metrics)))
    return session.execute(query.order_by(UnifiedTotal.source, UnifiedTotal.metric)).all()


def latest_values(
    session: Session, asset_id: str, metrics: Iterable[str] | None = None
) -> list[LatestValue]:
    """Return the newest value of each metric of ``asset_id`` from each source, in one query."""
    probes = [
        sa.select(
            UnifiedRecord.source,
            UnifiedRecord.metric,
            UnifiedRecord.value,
            UnifiedRecord.timestamp,
        )
        .where(
            UnifiedRecord.asset_id == asset_id,
            UnifiedRecord.metric == metric,
            UnifiedRecord.source == source,
        )
        .order_by(UnifiedRecord.timestamp.desc(), UnifiedRecord.id.desc())
        .limit(1)
        .subquery()
        .select()
        for source, metric in source_metric_pairs(session, metrics)
    ]
    if not probes:
        return []
    rows = session.execute(sa.union_all(*probes)).all()
    return sorted((LatestValue(asset_id, *row) for row in rows), key=lambda v: (v.metric, v.source))
