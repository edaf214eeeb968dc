"""Read-side queries the API serves: filtered pages, per-source statistics, health.

Totals, statistics and health read the aggregates the database maintains (migration 0006), so
that no request counts or groups a whole table.
"""

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from marshmallow import Schema, ValidationError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement, Executable

from kasparro.etl.sources import SOURCES
from kasparro.input_fields import AwareDateTime, WholeNumber
from kasparro.models import (
    EtlRun,
    RejectedCount,
    RunSummary,
    UnifiedCount,
    UnifiedRecord,
    UnifiedTotal,
)

FILTER_COLUMNS = {
    "source": UnifiedRecord.source,
    "asset": UnifiedRecord.asset_id,
    "symbol": UnifiedRecord.symbol,
    "metric": UnifiedRecord.metric,
}


MAX_ID = 2**63 - 1


class InvalidCursor(ValueError):
    """A cursor that this server did not issue."""


NOT_ISSUED = "cursor is not one this server issued"


def pack_cursor(fields: dict[str, Any]) -> str:
    """Return ``fields`` as an opaque cursor: URL-safe base64 of their compact JSON."""
    text = json.dumps(fields, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def unpack_cursor(cursor: str, contents: Schema, message: str = NOT_ISSUED) -> dict[str, Any]:
    """Return a cursor's fields as ``contents`` loads them; InvalidCursor when either fails.

    A client can forge any JSON in a cursor: ``contents`` checks it with the fields that check
    query arguments, so what reaches a query is what this server could have issued.
    """
    try:
        fields = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return contents.load(fields)
    except (binascii.Error, ValueError, ValidationError, RecursionError):
        raise InvalidCursor(message) from None


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
