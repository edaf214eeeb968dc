"""Initial schema: raw tables, unified records, assets, checkpoints, run log, rejects.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 18:04:33.770936

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "assets",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("symbol", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_assets_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_assets_symbol"), ["symbol"], unique=False)

    op.create_table(
        "etl_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("inserted", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("unresolved", sa.Integer(), nullable=False),
        sa.Column("checkpoint_before", sa.JSON(), nullable=True),
        sa.Column("checkpoint_after", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("etl_runs", schema=None) as batch_op:
        batch_op.create_index("ix_etl_runs_source_id", ["source", "id"], unique=False)
        batch_op.create_index("ix_etl_runs_status_id", ["status", "id"], unique=False)

    op.create_table(
        "checkpoints",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("cursor", sa.JSON(), nullable=False),
        sa.Column("last_raw_id", sa.BigInteger(), nullable=False),
        sa.Column("last_external_id", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["etl_runs.id"],
        ),
        sa.PrimaryKeyConstraint("source"),
    )
    op.create_table(
        "raw_api_records",
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("source_updated_at", sa.String(length=64), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("record_key", sa.String(length=255), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["etl_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("record_key"),
    )
    op.create_table(
        "raw_csv2_records",
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("start_offset", sa.BigInteger(), nullable=False),
        sa.Column("end_offset", sa.BigInteger(), nullable=False),
        sa.Column("raw_text", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("record_key", sa.String(length=255), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["etl_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("record_key"),
    )
    with op.batch_alter_table("raw_csv2_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_raw_csv2_records_content_hash"), ["content_hash"], unique=False
        )

    op.create_table(
        "raw_csv_records",
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("start_offset", sa.BigInteger(), nullable=False),
        sa.Column("end_offset", sa.BigInteger(), nullable=False),
        sa.Column("raw_text", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("record_key", sa.String(length=255), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["etl_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("record_key"),
    )
    with op.batch_alter_table("raw_csv_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_raw_csv_records_content_hash"), ["content_hash"], unique=False
        )

    op.create_table(
        "rejected_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("record_key", sa.String(length=255), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("raw_text", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["etl_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "record_key", name="uq_rejected_source_key"),
    )
    with op.batch_alter_table("rejected_records", schema=None) as batch_op:
        batch_op.create_index("ix_rejected_run_id", ["run_id"], unique=False)

    op.create_table(
        "unified_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("asset_id", sa.String(length=200), nullable=True),
        sa.Column("symbol", sa.String(length=50), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("metric", sa.String(length=50), nullable=False),
        sa.Column("value", sa.Numeric().with_variant(sa.Text(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=10), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("raw_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["etl_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "source", "external_id", "metric", "timestamp", name="uq_unified_observation"
        ),
    )
    with op.batch_alter_table("unified_records", schema=None) as batch_op:
        batch_op.create_index(
            "ix_unified_asset_timestamp_id", ["asset_id", "timestamp", "id"], unique=False
        )
        batch_op.create_index(
            "ix_unified_metric_timestamp_id", ["metric", "timestamp", "id"], unique=False
        )
        batch_op.create_index(
            "ix_unified_source_timestamp_id", ["source", "timestamp", "id"], unique=False
        )
        batch_op.create_index(
            "ix_unified_symbol_timestamp_id", ["symbol", "timestamp", "id"], unique=False
        )
        batch_op.create_index("ix_unified_timestamp_id", ["timestamp", "id"], unique=False)


def downgrade():
    with op.batch_alter_table("unified_records", schema=None) as batch_op:
        batch_op.drop_index("ix_unified_timestamp_id")
        batch_op.drop_index("ix_unified_symbol_timestamp_id")
        batch_op.drop_index("ix_unified_source_timestamp_id")
        batch_op.drop_index("ix_unified_metric_timestamp_id")
        batch_op.drop_index("ix_unified_asset_timestamp_id")

    op.drop_table("unified_records")
    with op.batch_alter_table("rejected_records", schema=None) as batch_op:
        batch_op.drop_index("ix_rejected_run_id")

    op.drop_table("rejected_records")
    with op.batch_alter_table("raw_csv_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_csv_records_content_hash"))

    op.drop_table("raw_csv_records")
    with op.batch_alter_table("raw_csv2_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_csv2_records_content_hash"))

    op.drop_table("raw_csv2_records")
    op.drop_table("raw_api_records")
    op.drop_table("checkpoints")
    with op.batch_alter_table("etl_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_etl_runs_status_id")
        batch_op.drop_index("ix_etl_runs_source_id")

    op.drop_table("etl_runs")
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_assets_symbol"))
        batch_op.drop_index(batch_op.f("ix_assets_name"))

    op.drop_table("assets")
