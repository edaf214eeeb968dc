"""Read-side queries the API serves: filtered pages, per-source statistics, health."""

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.etl.sources import SOURCES
from kasparro.models import EtlRun, RejectedRecord, RunStatus, UnifiedRecord

FILTER_COLUMNS = {
    "source": UnifiedRecord.source,
    "asset": UnifiedRecord.asset_id,
    "symbol": UnifiedRecord.symbol,
    "metric": UnifiedRecord.metric,
}


MAX_ID = 2**63 - 1


class InvalidCursor(ValueError):
    """A cursor that this server did not issue."""


def encode_cursor(record: UnifiedRecord) -> str:
    """Return an opaque cursor that points just after ``record`` in newest-first order."""
    text = json.dumps({"t": record.timestamp.isoformat(), "i": record.id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Return the (timestamp, id) a cursor points after."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        timestamp, record_id = datetime.fromisoformat(data["t"]).astimezone(UTC), int(data["i"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError, OverflowError):
        raise InvalidCursor("cursor is not one this server issued") from None
    if not 0 <= record_id <= MAX_ID:
        raise InvalidCursor("cursor is not one this server issued")
    return timestamp, record_id


@dataclass
class RecordPage:
    """One page of unified records and where it sits."""

    records: list[UnifiedRecord]
    page: int | None
    page_size: int
    total: int
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
    total = session.scalar(sa.select(sa.func.count()).select_from(UnifiedRecord).where(*conditions))
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
    records = list(session.scalars(query))
    next_cursor = encode_cursor(records[-1]) if len(records) == page_size else None
    return RecordPage(records, page, page_size, total, next_cursor)


def _last_runs(session: Session) -> dict[str, EtlRun]:
    # A SKIPPED attempt did no work: the run it collided with is the one that tells the state.
    newest = (
        sa.select(sa.func.max(EtlRun.id))
        .where(EtlRun.status != RunStatus.SKIPPED)
        .group_by(EtlRun.source)
    )
    return {
        run.source: run for run in session.scalars(sa.select(EtlRun).where(EtlRun.id.in_(newest)))
    }


def source_health(session: Session) -> tuple[EtlRun | None, dict[str, EtlRun]]:
    """Return the newest run overall and the newest run of each source."""
    last_runs = _last_runs(session)
    newest = max(last_runs.values(), key=lambda run: run.id, default=None)
    return newest, last_runs


def source_stats(session: Session) -> dict[str, dict[str, Any]]:
    """Return totals and run history for every source, in a handful of grouped queries."""

    def grouped(*columns, where=None, model=EtlRun) -> dict:
        query = sa.select(model.source, *columns).group_by(model.source)
        if where is not None:
            query = query.where(where)
        return {row[0]: row[1] if len(row) == 2 else row[1:] for row in session.execute(query)}

    totals = grouped(sa.func.count(), model=UnifiedRecord)
    unresolved = grouped(
        sa.func.count(), where=UnifiedRecord.asset_id.is_(None), model=UnifiedRecord
    )
    rejected = grouped(sa.func.count(), model=RejectedRecord)
    processed = grouped(sa.func.coalesce(sa.func.sum(EtlRun.rows_read), 0))
    last_success = grouped(
        sa.func.max(EtlRun.finished_at),
        where=EtlRun.status.in_((RunStatus.SUCCESS, RunStatus.PARTIAL)),
    )
    last_failure = grouped(sa.func.max(EtlRun.finished_at), where=EtlRun.status == RunStatus.FAILED)
    run_counts: dict[str, dict[str, int]] = {name: {} for name in SOURCES}
    for source, status, count in session.execute(
        sa.select(EtlRun.source, EtlRun.status, sa.func.count()).group_by(
            EtlRun.source, EtlRun.status
        )
    ):
        run_counts.setdefault(source, {})[status] = count
    last_runs = _last_runs(session)
    return {
        name: {
            "total_records": totals.get(name, 0),
            "unresolved_records": unresolved.get(name, 0),
            "rejected_records": rejected.get(name, 0),
            "records_processed": int(processed.get(name, 0)),
            "last_run": last_runs.get(name),
            "last_status": getattr(last_runs.get(name), "status", None),
            "last_duration_ms": getattr(last_runs.get(name), "duration_ms", None),
            "last_success_at": last_success.get(name),
            "last_failure_at": last_failure.get(name),
            "run_counts": run_counts[name],
        }
        for name in SOURCES
    }
