"""Assets as the API shows them: a searchable list, and one asset across sources.

Plain functions over a SQLAlchemy session; each returns the body of its route as plain Python
values (decimals as ``Decimal``, times as aware datetimes), which the routes only serialise.

Every read is served by an index of ``unified_records`` and none grows with the table:
- the newest value of an (asset, source, metric) is one probe of
  ``ix_unified_asset_metric_timestamp_id`` read backwards, and the triples probed come from the
  maintained ``unified_counts`` (one row per asset, source and metric with observations);
- a page of history (``kasparro.read.history``) reads only the observations of the buckets it
  returns, through the same index;
- the names an asset was resolved from are read from its newest ``RESOLVED_FROM_WINDOW``
  observations, through ``ix_unified_asset_timestamp_id``.
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from kasparro.db_types import UTCDateTime
from kasparro.models import Asset, AssetAlias, UnifiedCount, UnifiedRecord
from kasparro.read.values import LatestValue, consensus, latest_values, relative_change_percent

SORTS = ("market_cap", "name")
PRICE = "price_usd"
MARKET_CAP = "market_cap_usd"
CHANGE_WINDOW = timedelta(hours=24)
# How many of an asset's newest observations its "resolved from" names are read from.
RESOLVED_FROM_WINDOW = 10_000
ALIAS_SOURCE = "alias"  # the "source" of a name or symbol an operator mapped to the asset
MAX_ASSET_ID = 200  # assets.id is a VARCHAR(200)


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
    query = _one_probe_each(session.get_bind().dialect.name, probe, newer, triples)
    rows = session.execute(query)
    values: dict[str, list[LatestValue]] = defaultdict(list)
    for row in rows:
        values[row.asset_id].append(LatestValue(*row))
    return {
        asset_id: sorted(found, key=lambda v: (v.metric, v.source))
        for asset_id, found in values.items()
    }


def _one_probe_each(
    dialect: str, probe: sa.Select, newer: type[UnifiedRecord], triples: list
) -> sa.Select:
    """Return the query running ``probe`` once per (asset, source, metric) of ``triples``."""
    if dialect == "postgresql":
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
    return query


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
        everyone = _by_market_cap(session, matching, conditions)
        total = len(everyone)
        assets = everyone[offset : offset + page_size]
    return {
        "assets": asset_summaries(session, assets),
        "pagination": {
            "page": page,
            "page_size": page_size,
            "total": total,
            "total_pages": math.ceil(total / page_size),
        },
    }


def _by_market_cap(session: Session, matching: sa.Select, conditions: list) -> list[sa.Row]:
    """Return every matching asset, largest consensus market cap first, those without one last."""
    market_caps = {
        asset_id: consensus([v.value for v in values]).median
        for asset_id, values in newest_values(
            session, sa.select(Asset.id).where(*conditions), [MARKET_CAP]
        ).items()
    }

    def by_market_cap(asset) -> tuple:
        market_cap = market_caps.get(asset.id)
        return (market_cap is None, -(market_cap or 0), asset.id)

    return sorted(session.execute(matching).all(), key=by_market_cap)


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
