"""An asset's latest value per source and metric, and the consensus of those values.

Both the asset views and the cross-source anomaly check read them. The latest value of one
(asset, metric, source) is one probe of ``ix_unified_asset_metric_timestamp_id`` read backwards;
the pairs probed come from ``unified_totals``, which the database keeps small and exact.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.models import UnifiedRecord, UnifiedTotal


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


def consensus(values: Sequence[Decimal]) -> Consensus | None:
    """Return the median, range and spread of ``values``, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    low, high = ordered[0], ordered[-1]
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
