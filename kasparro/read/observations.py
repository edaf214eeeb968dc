"""Observations as GET /data serves them: a filtered page, newest first, and its total.

Totals read the aggregates the database maintains (migration 0006), so that no request counts a
whole table.
"""

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from marshmallow import Schema
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement, Executable

from kasparro.input_fields import AwareDateTime, WholeNumber
from kasparro.models import (
    UnifiedCount,
    UnifiedRecord,
    UnifiedTotal,
)
from kasparro.read.cursors import MAX_ID, pack_cursor, unpack_cursor

FILTER_COLUMNS = {
    "source": UnifiedRecord.source,
    "asset": UnifiedRecord.asset_id,
    "symbol": UnifiedRecord.symbol,
    "metric": UnifiedRecord.metric,
}


class RecordPosition(Schema):
    """A /data cursor's contents: the (timestamp, id) of the record the page starts after."""

    t = AwareDateTime(required=True)
    i = WholeNumber(0, MAX_ID, required=True)


RECORD_POSITION = RecordPosition()


def encode_cursor(record: UnifiedRecord) -> str:
    """Return an opaque cursor that points just after ``record`` in newest-first order."""
    return pack_cursor({"t": record.timestamp.isoformat(), "i": record.id})


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Return the (timestamp, id) a cursor points after."""
    position = unpack_cursor(cursor, RECORD_POSITION)
    return position["t"], position["i"]


# Totals under source, metric and asset are exact, from the counts the database maintains; any
# of these filters makes the total an estimate, unless few enough rows match to count outright.
ESTIMATED_FILTERS = ("symbol", "since", "until")
EXACT_COUNT_LIMIT = 1000


class Explain(Executable, ClauseElement):
    """``EXPLAIN (FORMAT JSON)`` of a query: PostgreSQL's plan for it, with its row estimate.

    Written as a SQLAlchemy construct (the documented ``@compiles`` extension, after the
    "Explain" recipe of SQLAlchemy's wiki) so that the query's parameters are bound as they are
    when it runs. Not cached, as in the recipe: its result has no columns SQLAlchemy could map.
    """

    inherit_cache = False

    def __init__(self, query: sa.Select):
        self.query = query


@compiles(Explain, "postgresql")
def _explain_on_postgresql(element: Explain, compiler, **kw) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.query, **kw)


@dataclass
class RecordPage:
    """One page of unified records and where it sits."""

    records: list[UnifiedRecord]
    page: int | None
    page_size: int
    total: int
    total_is_estimate: bool
    next_cursor: str | None

    @property
    def total_pages(self) -> int:
        """Return how many pages of this size the filtered result fills."""
        return math.ceil(self.total / self.page_size)


def page_unified_records(session: Session, args: dict[str, Any]) -> RecordPage:
    """Return a newest-first page, by offset (``page``) or after a ``cursor``.

    Ordering is (timestamp, id) descending: id breaks ties, so pages never overlap or skip.
    """
    conditions = [FILTER_COLUMNS[name] == args[name] for name in FILTER_COLUMNS if name in args]
    if "since" in args:
        conditions.append(UnifiedRecord.timestamp >= args["since"])
    if "until" in args:
        conditions.append(UnifiedRecord.timestamp <= args["until"])
    total, total_is_estimate = count_records(session, args, conditions)
    page_size = args["page_size"]
    query = (
        sa.select(UnifiedRecord)
        .where(*conditions)
        .order_by(UnifiedRecord.timestamp.desc(), UnifiedRecord.id.desc())
        .limit(page_size)
    )
    page: int | None = args["page"]
    if "cursor" in args:
        timestamp, record_id = decode_cursor(args["cursor"])
        # A row comparison is one index condition: the page starts at the cursor, at any depth
        # (the same test written with OR is a filter, and scans every newer row first).
        query = query.where(
            sa.tuple_(UnifiedRecord.timestamp, UnifiedRecord.id) < (timestamp, record_id)
        )
        page = None
    else:
        query = query.offset((page - 1) * page_size)
    # An exact total that ends before the page means no rows: a filter combination without
    # records (csv2's prices) would otherwise walk every record of one filter to find none.
    past_the_end = total <= (0 if page is None else (page - 1) * page_size)
    records = [] if past_the_end and not total_is_estimate else list(session.scalars(query))
    next_cursor = encode_cursor(records[-1]) if len(records) == page_size else None
    return RecordPage(records, page, page_size, total, total_is_estimate, next_cursor)


def count_records(
    session: Session, args: dict[str, Any], conditions: list[sa.ColumnElement[bool]]
) -> tuple[int, bool]:
    """Return how many records match the filters, and whether that number is an estimate.

    Under filters among source, metric and asset it is exact, read from the maintained counts.
    Under the others the matching rows are counted up to ``EXACT_COUNT_LIMIT``, through the
    index that serves the page; beyond that the number is an estimate, bounded by what is
    known: more than that limit, and no more than the exact total of the counted filters alone.
    On PostgreSQL it is the planner's estimate within those bounds; on SQLite, the upper bound.
    """
    if not any(name in args for name in ESTIMATED_FILTERS):
        return maintained_total(session, args), False
    matching = session.scalar(
        sa.select(sa.func.count()).select_from(
            sa.select(UnifiedRecord.id).where(*conditions).limit(EXACT_COUNT_LIMIT + 1).subquery()
        )
    )
    if matching <= EXACT_COUNT_LIMIT:
        return matching, False
    at_most = maintained_total(session, args)
    if session.get_bind().dialect.name != "postgresql":
        return at_most, True
    plan = session.scalar(Explain(sa.select(UnifiedRecord.id).where(*conditions)))
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return min(max(int(plan[0]["Plan"]["Plan Rows"]), matching), at_most), True


def maintained_total(session: Session, args: dict[str, Any]) -> int:
    """Return how many records match the source, metric and asset filters in ``args``, exactly.

    The sum runs over a few rows of the maintained counts, whatever the size of the table: one
    row per source and metric, or with an asset, that asset's rows.
    """
    if "asset" in args:
        model, conditions = UnifiedCount, [UnifiedCount.asset_id == args["asset"]]
    else:
        model, conditions = UnifiedTotal, []
    conditions += [
        getattr(model, name) == args[name] for name in ("source", "metric") if name in args
    ]
    return int(
        session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(model.records), 0)).where(*conditions)
        )
    )
