"""Counts and run summaries kept by triggers, so that no read counts or groups a whole table.

* ``unified_totals`` (source, metric: records, unresolved) and ``unified_counts`` (asset,
  source, metric: records) follow ``unified_records``;
* ``rejected_counts`` (source: records) follows ``rejected_records``;
* ``run_summaries`` (source: runs by status, records processed, newest run, last success and
  failure) follows ``etl_runs``.

Triggers keep them, so every writer (the ETL's upserts, retention's deletes, a back-fill that
updates ``asset_id``, a hand-written statement) keeps them exact, in its own transaction. On
PostgreSQL the counts move once per statement, from its transition tables (an upsert of 1,000
rows is one aggregate upsert, not 1,000). ``INSERT ... ON CONFLICT DO UPDATE`` fires both the
INSERT trigger (the rows it inserted) and the UPDATE trigger (the rows it updated), one after
the other: ordering the count rows within each would not order them across the two, and an ETL
batch and a retention delete could deadlock. So before it writes a count, a trigger takes a lock
per source it changes (a transaction-level advisory lock, sources in one order), held until
commit: count rows of a source are then written by one transaction at a time, and the writers
of several sources (retention) take their sources in the same order. Retention's lock timeout
applies to it: in a conflict retention gives way. SQLite has no transition tables and one
writer at a time: its triggers work row by row.

A run changes a handful of times, so ``etl_runs``' triggers are row-level on both; its maxima
are recomputed through indexes when a run starts, ends or goes, after the summary's row is
locked, so that the recomputation sees every committed run.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The statuses of runs as this revision knows them; a new one comes with a migration of its own.
STATUSES = ("RUNNING", "SUCCESS", "PARTIAL", "FAILED", "SKIPPED")
SUCCESSES = ("SUCCESS", "PARTIAL")
RUN_COLUMNS = ("source", "status", "rows_read", "finished_at")
# What each counted table feeds, and the statements that move its counts by ``delta`` per row
# of a set of rows ``changes`` (source, metric, asset_id, delta).
UNIFIED_UPSERTS = (
    """
    INSERT INTO unified_totals (source, metric, records, unresolved)
    SELECT source, metric, sum(delta),
           sum(CASE WHEN asset_id IS NULL THEN delta ELSE 0 END)
    FROM {changes} AS changes
    GROUP BY source, metric
    HAVING sum(delta) <> 0 OR sum(CASE WHEN asset_id IS NULL THEN delta ELSE 0 END) <> 0
    ON CONFLICT (source, metric) DO UPDATE
    SET records = unified_totals.records + excluded.records,
        unresolved = unified_totals.unresolved + excluded.unresolved
    """,
    """
    INSERT INTO unified_counts (asset_id, source, metric, records)
    SELECT asset_id, source, metric, sum(delta)
    FROM {changes} AS changes
    WHERE asset_id IS NOT NULL
    GROUP BY asset_id, source, metric
    HAVING sum(delta) <> 0
    ON CONFLICT (asset_id, source, metric) DO UPDATE
    SET records = unified_counts.records + excluded.records
    """,
)
REJECTED_UPSERTS = (
    """
    INSERT INTO rejected_counts (source, records)
    SELECT source, sum(delta)
    FROM {changes} AS changes
    GROUP BY source
    HAVING sum(delta) <> 0
    ON CONFLICT (source) DO UPDATE SET records = rejected_counts.records + excluded.records
    """,
)
COUNTED = {
    # table: (the name of its triggers and functions, its columns the counts need, upserts)
    "unified_records": ("unified_counts", "source, metric, asset_id", UNIFIED_UPSERTS),
    "rejected_records": ("rejected_counts", "source", REJECTED_UPSERTS),
}
# The class of the per-source counts locks (PostgreSQL advisory locks, keyed by the source's hash).
COUNTS_LOCK = 730_112_006
# What each table's TRUNCATE empties.
KEPT = {
    "unified_records": ("unified_totals", "unified_counts"),
    "rejected_records": ("rejected_counts",),
    "etl_runs": ("run_summaries",),
}


def upgrade():
    create_tables()
    op.create_index(
        "ix_etl_runs_source_status_finished",
        "etl_runs",
        ["source", "status", "finished_at"],
        unique=False,
    )
    # Triggers first, then the back-fill: on PostgreSQL, creating a trigger locks out writers of
    # its table until this transaction commits, so no row is counted twice or missed.
    if op.get_bind().dialect.name == "postgresql":
        # Every write of a count updates its row in place: room left on each page keeps those
        # updates HOT (no new index entry, the old version pruned within its page).
        for kept in KEPT.values():
            for table in kept:
                op.execute(f"ALTER TABLE {table} SET (fillfactor = 50)")
        create_postgresql_triggers()
    else:
        create_sqlite_triggers()
    back_fill()


def create_tables():
    op.create_table(
        "unified_totals",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=50), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("unresolved", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source", "metric"),
    )
    op.create_table(
        "unified_counts",
        sa.Column("asset_id", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=50), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("asset_id", "source", "metric"),
    )
    op.create_table(
        "rejected_counts",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )
    op.create_table(
        "run_summaries",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("records_processed", sa.BigInteger(), nullable=False),
        sa.Column("last_run_id", sa.Integer(), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        *(sa.Column(f"runs_{status.lower()}", sa.Integer(), nullable=False) for status in STATUSES),
        sa.PrimaryKeyConstraint("source"),
    )


def changes_of(*selects: str) -> str:
    """Return the subquery of every row's change: the union of ``selects``."""
    return "(" + " UNION ALL ".join(selects) + ")"


def upserts_over(upserts: tuple[str, ...], *selects: str, gate: bool = False) -> str:
    """Return ``upserts`` over the changes ``selects`` make, as one block of statements.

    With ``gate`` (PostgreSQL), the block first takes the counts lock of each source it
    changes, in one order, and holds them until the transaction ends.
    """
    changes = changes_of(*selects)
    statements = [upsert.format(changes=changes) for upsert in upserts]
    if gate:
        statements.insert(
            0,
            f"PERFORM pg_advisory_xact_lock({COUNTS_LOCK}, key) FROM"
            f" (SELECT DISTINCT hashtext(source) AS key FROM {changes} AS changes) AS sources"
            " ORDER BY key",
        )
    return "\n".join(statement + ";" for statement in statements)


def run_delta(row: str, sign: int) -> str:
    """Return the upsert that adds (sign 1) or takes away (sign -1) one run ``row`` (NEW, OLD)."""
    counts = [f"runs_{status.lower()}" for status in STATUSES]
    values = [
        f"{sign} * CASE WHEN {row}.status = '{status}' THEN 1 ELSE 0 END" for status in STATUSES
    ]
    summed = ("records_processed", *counts)
    return (
        f"INSERT INTO run_summaries (source, {', '.join(summed)})"
        f" VALUES ({row}.source, {sign} * {row}.rows_read, {', '.join(values)})"
        " ON CONFLICT (source) DO UPDATE SET "
        + ", ".join(f"{column} = run_summaries.{column} + excluded.{column}" for column in summed)
    )


def run_maxima(source: str) -> str:
    """Return the update that finds ``source``'s newest run, last success and last failure.

    Each maximum is one index lookup (a success is either of two statuses: one lookup each).
    """

    def latest(status: str) -> str:
        return (
            f"SELECT max(finished_at) AS finished_at FROM etl_runs"
            f" WHERE source = {source} AND status = '{status}'"
        )

    successes = " UNION ALL ".join(latest(status) for status in SUCCESSES)
    return (
        "UPDATE run_summaries SET"
        " last_run_id = (SELECT max(id) FROM etl_runs"
        f" WHERE source = {source} AND status <> 'SKIPPED'),"
        f" last_success_at = (SELECT max(finished_at) FROM ({successes}) AS successes),"
        f" last_failure_at = ({latest('FAILED')})"
        f" WHERE run_summaries.source = {source}"
    )


def create_postgresql_triggers():
    for table, (name, columns, upserts) in COUNTED.items():
        inserted = f"SELECT {columns}, 1 AS delta FROM new_rows"
        deleted = f"SELECT {columns}, -1 AS delta FROM old_rows"
        op.execute(
            f"""
            CREATE FUNCTION {name}_apply() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'INSERT' THEN
                    {upserts_over(upserts, inserted, gate=True)}
                ELSIF TG_OP = 'DELETE' THEN
                    {upserts_over(upserts, deleted, gate=True)}
                ELSE
                    {upserts_over(upserts, inserted, deleted, gate=True)}
                END IF;
                RETURN NULL;
            END
            $$
            """
        )
        # A trigger with transition tables answers one event: three of them.
        for event, tables in (
            ("INSERT", "NEW TABLE AS new_rows"),
            ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
            ("DELETE", "OLD TABLE AS old_rows"),
        ):
            op.execute(
                f"CREATE TRIGGER {name}_{event.lower()} AFTER {event} ON {table}"
                f" REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION {name}_apply()"
            )
    op.execute(
        f"""
        CREATE FUNCTION run_summaries_apply() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- The summary's row is locked by its first upsert: the maxima, read after it, see
            -- every run committed before.
            IF TG_OP <> 'INSERT' THEN
                {run_delta("OLD", -1)};
            END IF;
            IF TG_OP <> 'DELETE' THEN
                {run_delta("NEW", 1)};
            END IF;
            IF TG_OP = 'UPDATE' AND (OLD.source, OLD.status, OLD.finished_at)
                    IS NOT DISTINCT FROM (NEW.source, NEW.status, NEW.finished_at) THEN
                RETURN NULL;  -- only rows_read moved
            END IF;
            IF TG_OP <> 'INSERT' THEN
                {run_maxima("OLD.source")};
            END IF;
            IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.source <> OLD.source) THEN
                {run_maxima("NEW.source")};
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER run_summaries_insert_delete AFTER INSERT OR DELETE ON etl_runs"
        " FOR EACH ROW EXECUTE FUNCTION run_summaries_apply()"
    )
    op.execute(
        f"CREATE TRIGGER run_summaries_update AFTER UPDATE OF {', '.join(RUN_COLUMNS)} ON etl_runs"
        f" FOR EACH ROW WHEN (({', '.join(f'OLD.{c}' for c in RUN_COLUMNS)})"
        f" IS DISTINCT FROM ({', '.join(f'NEW.{c}' for c in RUN_COLUMNS)}))"
        " EXECUTE FUNCTION run_summaries_apply()"
    )
    # TRUNCATE fires no row or statement trigger of its own: it empties what it counted.
    op.execute(
        """
        CREATE FUNCTION maintained_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            kept text;
        BEGIN
            FOREACH kept IN ARRAY TG_ARGV LOOP
                EXECUTE format('DELETE FROM %I', kept);
            END LOOP;
            RETURN NULL;
        END
        $$
        """
    )
    for table, kept in KEPT.items():
        op.execute(
            f"CREATE TRIGGER {kept[0]}_truncate AFTER TRUNCATE ON {table}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION maintained_counts_truncate({', '.join(kept)})"
        )


def create_sqlite_triggers():
    for table, (name, columns, upserts) in COUNTED.items():
        names = columns.split(", ")

        def change(row: str, sign: int, names=names) -> str:
            return f"SELECT {', '.join(f'{row}.{c} AS {c}' for c in names)}, {sign} AS delta"

        key_changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in names)
        for event, when, selects in (
            ("INSERT", "", [change("NEW", 1)]),
            ("UPDATE", f" WHEN {key_changed}", [change("NEW", 1), change("OLD", -1)]),
            ("DELETE", "", [change("OLD", -1)]),
        ):
            op.execute(
                f"CREATE TRIGGER {name}_{event.lower()} AFTER {event} ON {table}"
                f" FOR EACH ROW{when} BEGIN {upserts_over(upserts, *selects)} END"
            )
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in RUN_COLUMNS)
    for event, statements in (
        ("INSERT", [run_delta("NEW", 1), run_maxima("NEW.source")]),
        (
            f"UPDATE OF {', '.join(RUN_COLUMNS)}",
            [
                run_delta("OLD", -1),
                run_delta("NEW", 1),
                run_maxima("OLD.source"),
                run_maxima("NEW.source"),
            ],
        ),
        ("DELETE", [run_delta("OLD", -1), run_maxima("OLD.source")]),
    ):
        when = f" WHEN {changed}" if event.startswith("UPDATE") else ""
        op.execute(
            f"CREATE TRIGGER run_summaries_{event.split()[0].lower()} AFTER {event} ON etl_runs"
            f" FOR EACH ROW{when} BEGIN {'; '.join(statements)}; END"
        )


def back_fill():
    for table, (_, columns, upserts) in COUNTED.items():
        for upsert in upserts:
            op.execute(
                upsert.format(changes=changes_of(f"SELECT {columns}, 1 AS delta FROM {table}"))
            )
    counts = ", ".join(f"runs_{status.lower()}" for status in STATUSES)
    by_status = ", ".join(
        f"sum(CASE WHEN status = '{status}' THEN 1 ELSE 0 END)" for status in STATUSES
    )
    op.execute(
        f"INSERT INTO run_summaries (source, records_processed, {counts})"
        f" SELECT source, sum(rows_read), {by_status} FROM etl_runs GROUP BY source"
    )
    op.execute(run_maxima("run_summaries.source"))


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for table, kept in KEPT.items():
            op.execute(f"DROP TRIGGER {kept[0]}_truncate ON {table}")
        op.execute("DROP FUNCTION maintained_counts_truncate()")
        op.execute("DROP TRIGGER run_summaries_insert_delete ON etl_runs")
        op.execute("DROP TRIGGER run_summaries_update ON etl_runs")
        op.execute("DROP FUNCTION run_summaries_apply()")
        for table, (name, _, _) in COUNTED.items():
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER {name}_{event} ON {table}")
            op.execute(f"DROP FUNCTION {name}_apply()")
    else:
        for name in ("unified_counts", "rejected_counts", "run_summaries"):
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER {name}_{event}")
    op.drop_index("ix_etl_runs_source_status_finished", table_name="etl_runs")
    for table in ("run_summaries", "rejected_counts", "unified_counts", "unified_totals"):
        op.drop_table(table)
