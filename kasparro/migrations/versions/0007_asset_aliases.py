"""Aliases an operator adds, and the indexes of an asset's history and of unresolved rows.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "asset_aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("alias", sa.String(length=200), nullable=False),
        sa.Column("asset_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "alias", name="uq_asset_alias"),
    )
    op.create_index("ix_asset_aliases_asset_id", "asset_aliases", ["asset_id"])
    op.create_index(
        "ix_unified_asset_metric_timestamp_id",
        "unified_records",
        ["asset_id", "metric", "timestamp", "id"],
    )
    op.create_index(
        "ix_unified_unresolved",
        "unified_records",
        ["name", "symbol"],
        sqlite_where=sa.text("asset_id IS NULL"),
        postgresql_where=sa.text("asset_id IS NULL"),
    )


def downgrade():
    op.drop_index("ix_unified_unresolved", table_name="unified_records")
    op.drop_index("ix_unified_asset_metric_timestamp_id", table_name="unified_records")
    op.drop_index("ix_asset_aliases_asset_id", table_name="asset_aliases")
    op.drop_table("asset_aliases")
