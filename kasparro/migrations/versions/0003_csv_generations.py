"""CSV file generations with their own header, exact bytes for records that are not text.

Every generation a CSV source reads gets a row in ``csv_generations`` with the header and field
map its rows are read with. Raw CSV records gain ``raw_bytes`` (records that cannot be stored
as text), ``truncated`` (an over-long line kept only in part) and ``prefix_hash`` (a fingerprint
of the file up to the record's end).

Generations read by an earlier version are recorded from the rows they left: the header is
the keys of a well-formed row's payload, in order, and the field map is worked out again from
it when those rows are transformed; the header's hash is known only for the generation the
checkpoint is in (an unknown one makes the next read start a new generation, which is safe).

Revision ID: 0003
Revises: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RAW_TABLES = {"csv1": "raw_csv_records", "csv2": "raw_csv2_records"}


def upgrade():
    op.create_table(
        "csv_generations",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("header", sa.JSON(), nullable=False),
        sa.Column("header_hash", sa.String(length=64), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.Column("encoding", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "generation"),
    )
    for table in RAW_TABLES.values():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("raw_text", existing_type=sa.Text(), nullable=True)
            batch_op.add_column(sa.Column("raw_bytes", sa.LargeBinary(), nullable=True))
            batch_op.add_column(
                sa.Column("truncated", sa.Boolean(), nullable=False, server_default=sa.false())
            )
            batch_op.add_column(sa.Column("prefix_hash", sa.String(length=64), nullable=True))
    _record_earlier_generations()


def _record_earlier_generations():
    connection = op.get_bind()
    generations = sa.table(
        "csv_generations",
        sa.column("source"),
        sa.column("generation"),
        sa.column("header", sa.JSON),
        sa.column("header_hash"),
        sa.column("encoding"),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    for source, table in RAW_TABLES.items():
        cursor = connection.execute(
            sa.text("SELECT cursor FROM checkpoints WHERE source = :s"), {"s": source}
        ).scalar()
        cursor = (json.loads(cursor) if isinstance(cursor, str) else cursor) or {}
        found = connection.execute(
            sa.text(f"SELECT generation, MIN(received_at) FROM {table} GROUP BY generation")
        ).all()
        for generation, first_seen in found:
            payloads = connection.execute(
                sa.text(f"SELECT payload FROM {table} WHERE generation = :g ORDER BY id"),
                {"g": generation},
            ).scalars()
            header = next((_keys(p) for p in payloads if _keys(p)), [])
            connection.execute(
                generations.insert().values(
                    source=source,
                    generation=generation,
                    header=header,
                    header_hash=cursor.get("header_hash", "")
                    if cursor.get("generation") == generation
                    else "",
                    encoding="utf-8",
                    created_at=first_seen,
                )
            )


def _keys(payload) -> list[str]:
    value = json.loads(payload) if isinstance(payload, str) else payload
    return list(value) if isinstance(value, dict) else []


def downgrade():
    for table in RAW_TABLES.values():
        # Records kept only as bytes have no text form for the older schema: left empty.
        op.execute(sa.text(f"UPDATE {table} SET raw_text = '' WHERE raw_text IS NULL"))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("prefix_hash")
            batch_op.drop_column("truncated")
            batch_op.drop_column("raw_bytes")
            batch_op.alter_column("raw_text", existing_type=sa.Text(), nullable=False)
    op.drop_table("csv_generations")
