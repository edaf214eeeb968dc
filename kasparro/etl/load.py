"""Set-based writes that work on PostgreSQL and SQLite alike: raw inserts, upserts, rejects."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kasparro.db_types import utcnow
from kasparro.etl.sources.base import RawRow
from kasparro.models import RawRecordMixin, RejectedRecord, UnifiedRecord

UNIFIED_KEY = ("source", "external_id", "metric", "timestamp")
UNIFIED_TRACKED = ("value", "asset_id", "symbol", "name", "currency")


def insert_for(session: Session) -> Callable[..., Any]:
    """Return the dialect's INSERT construct, the one that knows ON CONFLICT."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def insert_raw(
    session: Session, model: type[RawRecordMixin], rows: list[RawRow], run_id: int
) -> set[str]:
    """Insert raw rows not stored yet, in one statement; return the keys that were new."""
    unique: dict[str, RawRow] = {}
    for row in rows:
        unique.setdefault(row.record_key, row)
    if not unique:
        return set()
    now = utcnow()
    values = [
        {
            "run_id": run_id,
            "record_key": key,
            "payload": row.payload,
            "received_at": now,
            **row.columns,
        }
        for key, row in unique.items()
    ]
    statement = (
        insert_for(session)(model)
        .on_conflict_do_nothing(index_elements=["record_key"])
        .returning(model.record_key)
    )
    return set(session.scalars(statement, values))


@dataclass
class UpsertCounts:
    """What an upsert did: rows new, rows whose values changed, rows already as given."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def upsert_unified(session: Session, rows: list[dict[str, Any]]) -> UpsertCounts:
    """Upsert observations on their natural key; duplicates within the batch collapse first."""
    latest = {tuple(row[col] for col in UNIFIED_KEY): row for row in rows}
    if not latest:
        return UpsertCounts()
    key_columns = [getattr(UnifiedRecord, col) for col in UNIFIED_KEY]
    tracked_columns = [getattr(UnifiedRecord, col) for col in UNIFIED_TRACKED]
    stored = {
        tuple(found[: len(UNIFIED_KEY)]): tuple(found[len(UNIFIED_KEY) :])
        for found in session.execute(
            sa.select(*key_columns, *tracked_columns).where(
                sa.tuple_(*key_columns).in_(list(latest))
            )
        )
    }
    counts = UpsertCounts(unchanged=len(rows) - len(latest))
    writes = []
    for key, row in latest.items():
        if key not in stored:
            counts.inserted += 1
        elif stored[key] != tuple(row[col] for col in UNIFIED_TRACKED):
            counts.updated += 1
        else:
            counts.unchanged += 1
            continue
        writes.append(row)
    if writes:
        insert = insert_for(session)(UnifiedRecord)
        session.execute(
            insert.on_conflict_do_update(
                index_elements=list(UNIFIED_KEY),
                set_={col: insert.excluded[col] for col in (*UNIFIED_TRACKED, "run_id", "raw_id")},
            ),
            writes,
        )
    return counts


def insert_rejections(session: Session, rows: list[dict[str, Any]]) -> int:
    """Record rejected rows once each; return how many were new."""
    if not rows:
        return 0
    statement = (
        insert_for(session)(RejectedRecord)
        .on_conflict_do_nothing(index_elements=["source", "record_key"])
        .returning(RejectedRecord.id)
    )
    return len(session.scalars(statement, rows).all())
