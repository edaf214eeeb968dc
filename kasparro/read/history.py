"""An asset's history as GET /assets/<id>/history serves it: buckets of a fixed width, oldest first.

A page of history reads only the observations of the buckets it returns, through
``ix_unified_asset_metric_timestamp_id``.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from marshmallow import Schema
from sqlalchemy.orm import Session

from kasparro.input_fields import WholeNumber
from kasparro.models import UnifiedRecord
from kasparro.read.assets import PRICE, find_asset
from kasparro.read.cursors import NOT_ISSUED, InvalidCursor, pack_cursor, unpack_cursor
from kasparro.read.portable_sql import EpochSeconds, FromEpoch, NumericOrder, bucket_start

# Bucket widths in seconds; a bucket starts at a multiple of its width since the Unix epoch.
INTERVALS = {"5m": 300, "1h": 3600, "1d": 86400}
MAX_HISTORY_LIMIT = 500


def encode_history_cursor(bucket_start_seconds: int) -> str:
    """Return an opaque cursor for the page of buckets starting at this epoch second."""
    return pack_cursor({"b": bucket_start_seconds})


# The epoch seconds of the first and last second a datetime holds (years 1 and 9999).
FIRST_SECOND = int(datetime(1, 1, 1, tzinfo=UTC).timestamp())
LAST_SECOND = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())


class BucketPosition(Schema):
    """A history cursor's contents: the epoch second of the page's first bucket."""

    b = WholeNumber(FIRST_SECOND, LAST_SECOND, required=True)


BUCKET_POSITION = BucketPosition()


def decode_history_cursor(cursor: str, interval: str) -> datetime:
    """Return where the page a cursor points to starts; it must fall on an ``interval`` bucket."""
    message = f"{NOT_ISSUED} for {interval} buckets"
    seconds = unpack_cursor(cursor, BUCKET_POSITION, message)["b"]
    if seconds % INTERVALS[interval]:
        raise InvalidCursor(message)
    return datetime.fromtimestamp(seconds, UTC)


def asset_history(
    session: Session,
    asset_id: str,
    *,
    metric: str = PRICE,
    interval: str = "1h",
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> dict | None:
    """Return a page of an asset's OHLC buckets, oldest first; None when no asset has this id.

    Observations count from ``since`` (inclusive) to ``until`` (exclusive), of one source or of
    all together. A page starts at the bucket of the first observation at or after its start
    (``since``, or the ``cursor``) and spans at most ``limit`` bucket widths; empty buckets are
    absent. ``next_cursor`` is set while observations remain after the page. Raises
    InvalidCursor for a cursor this server did not issue for this interval.
    """
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}")
    asset = find_asset(session, asset_id)
    if asset is None:
        return None
    start = since
    if cursor is not None:
        after = decode_history_cursor(cursor, interval)
        start = after if start is None else max(start, after)
    buckets, next_start = history_buckets(
        session, asset.id, metric, INTERVALS[interval], source, start, until, limit
    )
    return {
        "asset_id": asset.id,
        "metric": metric,
        "source": source,
        "interval": interval,
        "buckets": buckets,
        "next_cursor": None if next_start is None else encode_history_cursor(next_start),
    }


OHLC = ("open", "high", "low", "close", "count")


def history_buckets(
    session: Session,
    asset_id: str,
    metric: str,
    width: int,
    source: str | None,
    start: datetime | None,
    until: datetime | None,
    limit: int,
) -> tuple[list[dict], int | None]:
    """Return up to ``limit`` widths of OHLC buckets, and where the next page starts, if any.

    One statement on both engines: the first observation from ``start`` fixes the page's span
    (``limit`` widths from the start of its bucket); the observations in the span are ordered
    within their bucket by (timestamp, id) and by value, and each bucket's first observation
    carries the bucket's open, high, low, close and count.
    """
    record = UnifiedRecord
    conditions = [record.asset_id == asset_id, record.metric == metric]
    if source is not None:
        conditions.append(record.source == source)
    if start is not None:
        conditions.append(record.timestamp >= start)
    if until is not None:
        conditions.append(record.timestamp < until)
    observations, span_end = _span_observations(conditions, width, limit)
    numbered = _first_of_each_bucket(observations)
    more = sa.exists().where(*conditions, record.timestamp >= FromEpoch(span_end))
    result = session.execute(
        sa.select(
            numbered.c.start_seconds,
            *(numbered.c[name] for name in OHLC),
            span_end.label("span_end"),
            more.label("more"),
        )
        .where(numbered.c.position == 1)
        .order_by(numbered.c.start_seconds)
    ).all()
    buckets = [
        {
            "start": datetime.fromtimestamp(start_seconds, UTC),
            **dict(zip(OHLC, values, strict=True)),
        }
        for start_seconds, *values, _, _ in result
    ]
    next_start = int(result[0].span_end) if result and result[0].more else None
    return buckets, next_start


def _span_observations(
    conditions: list, width: int, limit: int
) -> tuple[sa.Subquery, sa.ScalarSelect]:
    """Return a page's observations, with their bucket's start, and the epoch second it ends.

    The first observation matching ``conditions`` fixes the span: ``limit`` widths from the
    start of its bucket.
    """
    record = UnifiedRecord
    first = (
        sa.select(EpochSeconds(record.timestamp).label("seconds"))
        .where(*conditions)
        .order_by(record.timestamp, record.id)
        .limit(1)
        .cte("first_observation")
    )
    span_end = sa.select(bucket_start(first.c.seconds, width) + limit * width).scalar_subquery()
    observations = (
        sa.select(
            bucket_start(EpochSeconds(record.timestamp), width).label("start_seconds"),
            record.timestamp,
            record.id,
            record.value,
            NumericOrder(record.value).label("ordered_value"),
        )
        .where(*conditions, record.timestamp < FromEpoch(span_end))
        .subquery("observations")
    )
    return observations, span_end


def _first_of_each_bucket(observations: sa.Subquery) -> sa.Subquery:
    """Return the observations numbered in their bucket, each with the bucket's OHLC and count."""
    record = UnifiedRecord
    row = observations.c

    def first_by(*order_by) -> sa.ColumnElement:
        return sa.func.first_value(row.value, type_=record.value.type).over(
            partition_by=row.start_seconds, order_by=order_by
        )

    return sa.select(
        row.start_seconds,
        sa.func.row_number()
        .over(partition_by=row.start_seconds, order_by=(row.timestamp, row.id))
        .label("position"),
        first_by(row.timestamp, row.id).label("open"),
        first_by(row.ordered_value.desc(), row.id).label("high"),
        first_by(row.ordered_value, row.id).label("low"),
        first_by(row.timestamp.desc(), row.id.desc()).label("close"),
        sa.func.count().over(partition_by=row.start_seconds).label("count"),
    ).subquery("numbered")
