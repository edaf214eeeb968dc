"""Assets as the API shows them: a searchable list, one asset across sources, and its history.

Plain functions over a SQLAlchemy session; each returns the body of its route as plain Python
values (decimals as ``Decimal``, times as aware datetimes), which the routes only serialise.

Every read is served by an index of ``unified_records`` and none grows with the table:
- the newest value of an (asset, source, metric) is one probe of
  ``ix_unified_asset_metric_timestamp_id`` read backwards, and the triples probed come from the
  maintained ``unified_counts`` (one row per asset, source and metric with observations);
- a page of history reads only the observations of the buckets it returns, through the same
  index;
- the names an asset was resolved from are read from its newest ``RESOLVED_FROM_WINDOW``
  observations, through ``ix_unified_asset_timestamp_id``.
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from marshmallow import Schema
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.functions import FunctionElement

from kasparro.asset_values import LatestValue, consensus, latest_values, relative_change_percent
from kasparro.db_types import UTCDateTime
from kasparro.input_fields import WholeNumber
from kasparro.models import Asset, AssetAlias, UnifiedCount, UnifiedRecord
from kasparro.queries import NOT_ISSUED, InvalidCursor, pack_cursor, unpack_cursor

SORTS = ("market_cap", "name")
PRICE = "price_usd"
MARKET_CAP = "market_cap_usd"
CHANGE_WINDOW = timedelta(hours=24)
# Bucket widths in seconds; a bucket starts at a multiple of its width since the Unix epoch.
INTERVALS = {"5m": 300, "1h": 3600, "1d": 86400}
MAX_HISTORY_LIMIT = 500
# How many of an asset's newest observations its "resolved from" names are read from.
RESOLVED_FROM_WINDOW = 10_000
ALIAS_SOURCE = "alias"  # the "source" of a name or symbol an operator mapped to the asset
MAX_ASSET_ID = 200  # assets.id is a VARCHAR(200)


# --- SQL both engines run the same way ---------------------------------------------------------


class EngineFunction(FunctionElement):
    """SQL of one argument, written once for PostgreSQL and once for SQLite.

    A subclass gives both as templates, ``{}`` standing for the compiled argument.
    """

    inherit_cache = True
    postgresql_sql: str
    sqlite_sql: str


@compiles(EngineFunction)
def _on_postgresql(element: EngineFunction, compiler, **kw) -> str:
    return element.postgresql_sql.format(compiler.process(element.clauses, **kw))


@compiles(EngineFunction, "sqlite")
def _on_sqlite(element: EngineFunction, compiler, **kw) -> str:
    return element.sqlite_sql.format(compiler.process(element.clauses, **kw))


class EpochSeconds(EngineFunction):
    """Whole seconds since the Unix epoch of a UTC timestamp column, rounded down."""

    type = sa.BigInteger()
    name = "epoch_seconds"
    inherit_cache = True
    postgresql_sql = "CAST(floor(EXTRACT(EPOCH FROM {})) AS BIGINT)"
    # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC): the first 19 characters are the whole
    # seconds. strftime('%s') of the full text rounds to milliseconds, so 10:59:59.9999 would
    # fall in the 11:00 bucket.
    sqlite_sql = "CAST(strftime('%s', substr({}, 1, 19)) AS INTEGER)"


class FromEpoch(EngineFunction):
    """The UTC timestamp of a number of seconds since the Unix epoch, comparable with columns."""

    type = sa.DateTime()
    name = "from_epoch"
    inherit_cache = True
    postgresql_sql = "to_timestamp({})"
    # 'YYYY-MM-DD HH:MM:SS' sorts before the stored 'YYYY-MM-DD HH:MM:SS.000000' of the same
    # instant, so "stored < this" is "before this instant", as on PostgreSQL.
    sqlite_sql = "datetime({}, 'unixepoch')"


class NumericOrder(EngineFunction):
    """A value column as something to order by: NUMERIC as it is; SQLite's text as a number."""

    type = sa.Numeric()
    name = "numeric_order"
    inherit_cache = True
    postgresql_sql = "{}"
    # SQLite keeps exact decimals as text (db_types.ExactDecimal); compared as 64-bit floats
    # they order right unless two differ only past the 15th significant digit.
    sqlite_sql = "CAST({} AS REAL)"


def bucket_start(epoch_seconds: sa.ColumnElement[int], width: int) -> sa.ColumnElement[int]:
    """Return the start, in epoch seconds, of the ``width``-second bucket holding a moment."""
    # Both engines' % keeps the dividend's sign; adding the width first rounds down before 1970 too.
    return epoch_seconds - ((epoch_seconds % width) + width) % width


# --- newest values of many assets --------------------------------------------------------------


def newest_values(
    session: Session,
    asset_ids: Sequence[str] | sa.Select,
    metrics: Iterable[str] | None = None,
    *,
    at_or_before: Mapping[str, datetime] | None = None,
) -> dict[str, list[LatestValue]]:
    """Return, per asset, the newest value of each metric from each source, in one query.

    The (asset, source, metric) triples come from the maintained ``unified_counts``; each is one
    backward probe of ``ix_unified_asset_metric_timestamp_id``. With ``at_or_before`` each value
    is the newest at or before its asset's time there (none for an asset without one).
    """
    if (isinstance(asset_ids, Sequence) and not asset_ids) or at_or_before == {}:
        return {}
    newer = aliased(UnifiedRecord)
    probe = sa.select().where(
        newer.asset_id == UnifiedCount.asset_id,
        newer.metric == UnifiedCount.metric,
        newer.source == UnifiedCount.source,
    )
    if at_or_before is not None:
        bound = sa.case(
            *(
                (UnifiedCount.asset_id == asset_id, sa.literal(moment, UTCDateTime()))
                for asset_id, moment in at_or_before.items()
            )
        )
        probe = probe.where(newer.timestamp <= bound)
    probe = probe.order_by(newer.timestamp.desc(), newer.id.desc()).limit(1)
    triples = [
        UnifiedCount.asset_id.in_(asset_ids),
        UnifiedCount.records > 0,
        *([] if metrics is None else [UnifiedCount.metric.in_(list(metrics))]),
    ]
    if session.get_bind().dialect.name == "postgresql":
        # A lateral join is a nested loop by construction: one probe per triple, however few
        # rows the planner expects (joining the probes' ids back instead, it hashed a full scan).
        newest = probe.add_columns(newer.value, newer.timestamp).lateral("newest")
        query = (
            sa.select(
                UnifiedCount.asset_id,
                UnifiedCount.source,
                UnifiedCount.metric,
                newest.c.value,
                newest.c.timestamp,
            )
            .join(newest, sa.true())
            .where(*triples)
        )
    else:
        # SQLite has no lateral join: each triple's newest id, then that row by its rowid.
        newest_id = probe.add_columns(newer.id).correlate(UnifiedCount).scalar_subquery()
        found = sa.select(newest_id.label("record_id")).where(*triples).subquery()
        query = sa.select(
            UnifiedRecord.asset_id,
            UnifiedRecord.source,
            UnifiedRecord.metric,
            UnifiedRecord.value,
            UnifiedRecord.timestamp,
        ).join(found, UnifiedRecord.id == found.c.record_id)
    rows = session.execute(query)
    values: dict[str, list[LatestValue]] = defaultdict(list)
    for row in rows:
        values[row.asset_id].append(LatestValue(*row))
    return {
        asset_id: sorted(found, key=lambda v: (v.metric, v.source))
        for asset_id, found in values.items()
    }


def _of_metric(values: Iterable[LatestValue], metric: str) -> list[LatestValue]:
    return [value for value in values if value.metric == metric]


def _percent_change(now: Decimal, then: Decimal) -> float | None:
    return relative_change_percent(then, now) if then else None


# --- GET /assets ---------------------------------------------------------------------------------


def list_assets(
    session: Session,
    *,
    q: str | None = None,
    sort: str = "market_cap",
    page: int = 1,
    page_size: int = 10,
) -> dict:
    """Return one page of the assets that have observations, searched and sorted.

    ``q`` matches a substring of the name or the symbol, case-insensitively. ``market_cap``
    sorts by the consensus of each source's newest market cap, largest first, assets without
    one last; ``name`` sorts by name, case-insensitively; the asset id breaks ties.
    """
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}")
    observed = sa.select(UnifiedCount.asset_id).where(UnifiedCount.records > 0)
    conditions = [Asset.id.in_(observed)]
    if q and q.strip():
        needle = q.strip().lower()
        conditions.append(
            sa.or_(
                sa.func.lower(Asset.name).contains(needle, autoescape=True),
                sa.func.lower(Asset.symbol).contains(needle, autoescape=True),
            )
        )
    matching = sa.select(Asset.id, Asset.symbol, Asset.name).where(*conditions)
    offset = (page - 1) * page_size
    if sort == "name":
        total = session.scalar(sa.select(sa.func.count()).select_from(matching.subquery()))
        assets = session.execute(
            matching.order_by(sa.func.lower(Asset.name), Asset.id).offset(offset).limit(page_size)
        ).all()
    else:
        everyone = session.execute(matching).all()
        total = len(everyone)
        market_caps = {
            asset_id: consensus([v.value for v in values]).median
            for asset_id, values in newest_values(
                session, sa.select(Asset.id).where(*conditions), [MARKET_CAP]
            ).items()
        }

        def by_market_cap(asset) -> tuple:
            market_cap = market_caps.get(asset.id)
            return (market_cap is None, -(market_cap or 0), asset.id)

        assets = sorted(everyone, key=by_market_cap)[offset : offset + page_size]
    return {
        "assets": asset_summaries(session, assets),
        "pagination": {
            "page": page,
            "page_size": page_size,
            "total": total,
            "total_pages": math.ceil(total / page_size),
        },
    }


def asset_summaries(session: Session, assets: Sequence[Any]) -> list[dict]:
    """Return the list entry of each asset (rows with id, symbol and name), in the same order."""
    latest = newest_values(session, [asset.id for asset in assets])
    newest_price_at = {
        asset_id: max(v.timestamp for v in prices)
        for asset_id, values in latest.items()
        if (prices := _of_metric(values, PRICE))
    }
    earlier = newest_values(
        session,
        list(newest_price_at),
        [PRICE],
        at_or_before={
            asset_id: moment - CHANGE_WINDOW for asset_id, moment in newest_price_at.items()
        },
    )
    summaries = []
    for asset in assets:
        values = latest.get(asset.id, [])
        price = consensus([v.value for v in _of_metric(values, PRICE)])
        price_before = consensus([v.value for v in earlier.get(asset.id, [])])
        market_cap = consensus([v.value for v in _of_metric(values, MARKET_CAP)])
        summaries.append(
            {
                "id": asset.id,
                "symbol": asset.symbol.upper(),
                "name": asset.name,
                "price_usd": price.median if price else None,
                "change_24h_percent": (
                    _percent_change(price.median, price_before.median)
                    if price and price_before
                    else None
                ),
                "spread_percent": price.spread_percent if price else None,
                "market_cap_usd": market_cap.median if market_cap else None,
                "sources": sorted({v.source for v in values}),
                "last_reported_at": max((v.timestamp for v in values), default=None),
            }
        )
    return summaries


# --- GET /assets/<id> ----------------------------------------------------------------------------


def find_asset(session: Session, asset_id: str) -> Asset | None:
    """Return the asset with this id, or None (also for an id no asset could have)."""
    if len(asset_id) > MAX_ASSET_ID or "\x00" in asset_id:
        return None
    return session.get(Asset, asset_id)


def asset_detail(session: Session, asset_id: str) -> dict | None:
    """Return one asset across sources, or None when no asset has this id.

    Its newest value of each metric from each source, the consensus of those per metric, when
    each source last reported it, and the names and symbols it was resolved from.
    """
    asset = find_asset(session, asset_id)
    if asset is None:
        return None
    latest = latest_values(session, asset.id)
    by_metric: dict[str, list[Decimal]] = defaultdict(list)
    last_reported: dict[str, datetime] = {}
    for value in latest:
        by_metric[value.metric].append(value.value)
        previous = last_reported.get(value.source, value.timestamp)
        last_reported[value.source] = max(value.timestamp, previous)
    return {
        "id": asset.id,
        "symbol": asset.symbol.upper(),
        "name": asset.name,
        "latest": [
            {"source": v.source, "metric": v.metric, "value": v.value, "timestamp": v.timestamp}
            for v in latest
        ],
        "consensus": [
            {"metric": metric, **vars(consensus(values))}
            for metric, values in sorted(by_metric.items())
        ],
        "last_reported": [
            {"source": source, "timestamp": moment}
            for source, moment in sorted(last_reported.items())
        ],
        "resolved_from": resolved_from(session, asset.id),
    }


def resolved_from(session: Session, asset_id: str) -> list[dict]:
    """Return the names and symbols an asset was resolved from, then its operator aliases.

    Each (source, name, symbol) with how many of the asset's newest ``RESOLVED_FROM_WINDOW``
    observations carry it: a bounded read of ``ix_unified_asset_timestamp_id``, whatever the
    asset's history. Aliases come from ``asset_aliases``, with source ``alias``.
    """
    newest = (
        sa.select(UnifiedRecord.source, UnifiedRecord.name, UnifiedRecord.symbol)
        .where(UnifiedRecord.asset_id == asset_id)
        .order_by(UnifiedRecord.timestamp.desc(), UnifiedRecord.id.desc())
        .limit(RESOLVED_FROM_WINDOW)
        .subquery()
    )
    seen = session.execute(
        sa.select(newest.c.source, newest.c.name, newest.c.symbol, sa.func.count()).group_by(
            newest.c.source, newest.c.name, newest.c.symbol
        )
    ).all()
    # Ordered here: the engines disagree on where NULL sorts.
    seen.sort(key=lambda row: (row[0], row[1] is None, row[1] or "", row[2] is None, row[2] or ""))
    aliases = session.execute(
        sa.select(AssetAlias.kind, AssetAlias.alias)
        .where(AssetAlias.asset_id == asset_id)
        .order_by(AssetAlias.kind, AssetAlias.alias)
    ).all()
    return [
        {"name": name, "symbol": symbol, "source": source, "observations": observations}
        for source, name, symbol, observations in seen
    ] + [
        {
            "name": alias if kind == "name" else None,
            "symbol": alias if kind == "symbol" else None,
            "source": ALIAS_SOURCE,
            "observations": None,
        }
        for kind, alias in aliases
    ]


# --- GET /assets/<id>/history ------------------------------------------------------------------


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

    row = observations.c

    def first_by(*order_by) -> sa.ColumnElement:
        return sa.func.first_value(row.value, type_=record.value.type).over(
            partition_by=row.start_seconds, order_by=order_by
        )

    numbered = sa.select(
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
    more = sa.exists().where(*conditions, record.timestamp >= FromEpoch(span_end))
    result = session.execute(
        sa.select(
            numbered.c.start_seconds,
            numbered.c.open,
            numbered.c.high,
            numbered.c.low,
            numbered.c.close,
            numbered.c["count"],
            span_end.label("span_end"),
            more.label("more"),
        )
        .where(numbered.c.position == 1)
        .order_by(numbered.c.start_seconds)
    ).all()
    buckets = [
        {
            "start": datetime.fromtimestamp(start_seconds, UTC),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "count": count,
        }
        for start_seconds, open_, high, low, close, count, _, _ in result
    ]
    next_start = int(result[0].span_end) if result and result[0].more else None
    return buckets, next_start
