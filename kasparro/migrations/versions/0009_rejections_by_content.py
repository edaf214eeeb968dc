"""A rejection is recorded once per content: ``rejected_records.content_key``, unique per source.

A CSV file read again as a new generation (edited above its checkpoint, or replaced) recorded
each of its bad lines again, so ``rejected_records`` and the counts ``/stats`` serves grew with
every reading. A rejection now carries a content key (``Source.content_keys``): for a CSV
record, the hash of its bytes and its occurrence among the identical lines of its generation
(``<hash>:1``, ``<hash>:2``), so identical lines of one file stay as many rejections while the
same line read again is known; for a source that reads each record once, its natural key.

Rows stored before get their key set-wise: a CSV rejection from its raw row (its hash, and how
many identical lines came before it in its generation); any other, or one whose raw row
retention removed, its record key. Then the later rows of each key go, oldest kept, as a run
under this rule would have stored them. The ``rejected_counts`` triggers count the deletions,
and the data version moves, so kept responses (``/stats``) are dropped. The unique constraint
comes last, with the column made NOT NULL.

On SQLite that last step copies the table (batch mode), which drops its triggers: they are read
first and created again as they were.

Revision ID: 0009
Revises: 0008
"""

from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TABLE = "rejected_records"
RAW_TABLES = {"csv1": "raw_csv_records", "csv2": "raw_csv2_records"}
MIGRATIONS_SCOPE = "migrations"  # the data_versions counter a migration that rewrites data moves


def upgrade():
    op.add_column(TABLE, sa.Column("content_key", sa.String(length=255), nullable=True))
    for source, raw in RAW_TABLES.items():
        occurrence = (
            f"1 + (SELECT count(*) FROM {raw} AS earlier"
            " WHERE earlier.content_hash = raw.content_hash"
            " AND earlier.generation = raw.generation AND earlier.line_no < raw.line_no)"
        )
        op.execute(
            sa.text(
                f"UPDATE {TABLE} SET content_key = ("
                f"SELECT raw.content_hash || ':' || CAST({occurrence} AS VARCHAR(20))"
                f" FROM {raw} AS raw WHERE raw.record_key = {TABLE}.record_key)"
                " WHERE source = :source"
            ).bindparams(source=source)
        )
    op.execute(f"UPDATE {TABLE} SET content_key = record_key WHERE content_key IS NULL")
    op.execute(
        f"DELETE FROM {TABLE} WHERE id NOT IN"
        f" (SELECT min(id) FROM {TABLE} GROUP BY source, content_key)"
    )
    with keeping_sqlite_triggers(TABLE), op.batch_alter_table(TABLE) as batch_op:
        batch_op.alter_column("content_key", existing_type=sa.String(length=255), nullable=False)
        batch_op.create_unique_constraint("uq_rejected_source_content", ["source", "content_key"])
    op.execute(
        "INSERT INTO data_versions (scope, version) VALUES"
        f" ('{MIGRATIONS_SCOPE}', 1) ON CONFLICT (scope) DO UPDATE"
        " SET version = data_versions.version + 1"
    )


@contextmanager
def keeping_sqlite_triggers(table: str):
    """Create ``table``'s SQLite triggers again after a batch operation copied the table."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    triggers = (
        bind.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table"),
            {"table": table},
        )
        .scalars()
        .all()
    )
    yield
    for trigger in triggers:
        op.execute(trigger)


def downgrade():
    # Rejections stay one per content: the older schema only asks one per record key.
    with keeping_sqlite_triggers(TABLE), op.batch_alter_table(TABLE) as batch_op:
        batch_op.drop_constraint("uq_rejected_source_content", type_="unique")
        batch_op.drop_column("content_key")
