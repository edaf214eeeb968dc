"""SQL both engines run the same way: each function written once for PostgreSQL, once for SQLite."""

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


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
