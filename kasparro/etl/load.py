"""Set-based writes that work on PostgreSQL and SQLite alike: raw inserts, upserts, rejects."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kasparro.db_types import utcnow
from kasparro.etl.sources.base import SOURCES, RawRow, Source
from kasparro.models import RawRecordMixin, RejectedRecord, UnifiedRecord

UNIFIED_KEY = ("source", "external_id", "metric", "timestamp")
UNIFIED_TRACKED = ("value", "asset_id", "symbol", "name", "currency")
# The raw ids of a stored row and of the row that would replace it, as an upsert's WHERE names
# them on both engines. By name: a subquery that uses a table column takes the table into its
# own FROM, since an INSERT is nothing it can correlate with.
STORED_RAW_ID = sa.literal_column("unified_records.raw_id", sa.BigInteger)
INCOMING_RAW_ID = sa.literal_column("excluded.raw_id", sa.BigInteger)


def insert_for(session: Session) -> Callable[..., Any]:
    """Return the dialect's INSERT construct, the one that knows ON CONFLICT."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def insert_many(
    session: Session,
    model: type,
    rows: list[dict[str, Any]],
    finish: Callable[[Any], Any],
) -> sa.Result:
    """Insert ``rows`` in one statement; ``finish`` adds the ON CONFLICT and RETURNING clauses.

    On PostgreSQL the rows are streamed with ``COPY`` into a temporary staging table of the
    same columns, then inserted set-wise from it in one statement, as PostgreSQL's manual
    advises for bulk loads: no parameter per value, no per-row statement. The staging table
    belongs to the connection and is emptied at every commit. SQLite takes the rows as a
    multi-row VALUES.
    """
    # On the table, not the mapped class: the ORM's bulk machinery would cost more than the COPY.
    insert = insert_for(session)(model.__table__)
    if session.get_bind().dialect.name != "postgresql":
        return session.execute(finish(insert), rows)
    columns = list(rows[0])
    stage = _stage(session, model.__table__, columns, rows)
    return session.execute(finish(insert.from_select(columns, sa.select(*stage.c))))


def _stage(
    session: Session, table: sa.Table, columns: list[str], rows: list[dict[str, Any]]
) -> sa.TableClause:
    connection = session.connection()
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    # One staging table per target, set of columns and their types as this process's models
    # declare them, under a name that fits PostgreSQL's 63 characters.
    types = [table.c[column].type.compile(dialect) for column in columns]
    shape = f"{table.name}:{columns}:{types}"
    name = f"stage_{hashlib.sha256(shape.encode()).hexdigest()[:24]}"
    listed = ", ".join(quote(column) for column in columns)
    json_columns = {column for column in columns if isinstance(table.c[column].type, sa.JSON)}
    try:
        with connection.connection.driver_connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DELETE ROWS AS SELECT "
                f"{listed} FROM {dialect.identifier_preparer.format_table(table)} WITH NO DATA;"
                f" TRUNCATE {name}"
            )
            with cursor.copy(f"COPY {name} ({listed}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(
                        [
                            _json(row[column]) if column in json_columns else row[column]
                            for column in columns
                        ]
                    )
    except dialect.dbapi.Error as exc:
        # The driver's own cursor: tell SQLAlchemy what it would have seen, so that a lost
        # connection is discarded and the error reads like any other database error.
        lost = dialect.is_disconnect(exc, connection.connection, None)
        if lost:
            connection.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            f"COPY {name}", None, exc, dialect.dbapi.Error, connection_invalidated=lost
        ) from exc
    return sa.table(name, *(sa.column(column, table.c[column].type) for column in columns))


def _json(value: Any) -> str:
    return "null" if value is None else json.dumps(value)  # a CSV record has no payload


def insert_raw(
    session: Session, model: type[RawRecordMixin], rows: list[RawRow], run_id: int
) -> dict[str, int]:
    """Insert raw rows not stored yet, in one statement; return the new ones' ids by key."""
    unique: dict[str, RawRow] = {}
    for row in rows:
        unique.setdefault(row.record_key, row)
    if not unique:
        return {}
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
    result = insert_many(
        session,
        model,
        values,
        lambda insert: insert.on_conflict_do_nothing(index_elements=["record_key"]).returning(
            insert.table.c.record_key, insert.table.c.id
        ),
    )
    return dict(result.tuples().all())


@dataclass
class UpsertCounts:
    """What an upsert did: rows new, rows whose values changed, rows already as given."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def upsert_unified(session: Session, rows: list[dict[str, Any]]) -> UpsertCounts:
    """Upsert observations on their natural key in one statement; count what it did.

    Rows of the batch with the same key collapse first: the last one wins, as it would over a
    stored row, and the ones it supersedes count as updated. A stored row is rewritten only
    when a tracked value differs and its source states the row anew (``Source.states_anew``),
    and RETURNING yields just the rows written. The order is checked in the statement, on the
    row as it is when locked, so a concurrent writer that committed a newer statement first is
    not overwritten. A returned ``ingested_at`` equal to this batch's stamp means inserted: an
    update keeps the original.
    """
    stamp = utcnow()
    latest = {tuple(row[col] for col in UNIFIED_KEY): {**row, "ingested_at": stamp} for row in rows}
    if not latest:
        return UpsertCounts()
    table = UnifiedRecord.__table__
    sources = sorted({row["source"] for row in latest.values()})

    def upsert(insert):
        changed = (table.c[col].is_distinct_from(insert.excluded[col]) for col in UNIFIED_TRACKED)
        stated_anew = _stated_anew(sources, STORED_RAW_ID, INCOMING_RAW_ID)
        return insert.on_conflict_do_update(
            index_elements=list(UNIFIED_KEY),
            set_={col: insert.excluded[col] for col in (*UNIFIED_TRACKED, "run_id", "raw_id")},
            where=sa.and_(sa.or_(*changed), stated_anew),
        ).returning(table.c.ingested_at)

    written = insert_many(session, UnifiedRecord, list(latest.values()), upsert).scalars().all()
    inserted = sum(1 for ingested_at in written if ingested_at == stamp)
    superseded = len(rows) - len(latest)  # an earlier row of this batch, restated by a later one
    return UpsertCounts(
        inserted=inserted,
        updated=len(written) - inserted + superseded,
        unchanged=len(latest) - len(written),
    )


def _stated_anew(
    sources: list[str], stored: sa.ColumnElement[int], incoming: sa.ColumnElement[int]
) -> sa.ColumnElement[bool]:
    """Return the statement order of each source of a batch, for its own rows."""
    orders = {name: SOURCES.get(name, Source).states_anew(stored, incoming) for name in sources}
    if len(orders) == 1:  # a run's or a reprocess's batch
        return next(iter(orders.values()))
    source = UnifiedRecord.__table__.c.source
    return sa.and_(*(sa.or_(source != name, order) for name, order in orders.items()))


def insert_rejections(session: Session, rows: list[dict[str, Any]]) -> int:
    """Record rejected rows once each; return how many were new.

    A rejection already stored, for the same raw record or for the same content (the source's
    ``content_keys``), is left as it is.
    """
    if not rows:
        return 0
    result = insert_many(
        session,
        RejectedRecord,
        rows,
        lambda insert: insert.on_conflict_do_nothing().returning(insert.table.c.id),
    )
    return len(result.scalars().all())
