"""One RUNNING run per source, and a heartbeat that lets a dead run's lock expire.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("etl_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    # Runs left RUNNING by an older version would block the new index: close them first.
    op.execute(
        "UPDATE etl_runs SET status = 'FAILED', error = 'abandoned before upgrade' "
        "WHERE status = 'RUNNING'"
    )
    op.create_index(
        "uq_etl_runs_one_running_per_source",
        "etl_runs",
        ["source"],
        unique=True,
        postgresql_where=sa.text("status = 'RUNNING'"),
        sqlite_where=sa.text("status = 'RUNNING'"),
    )


def downgrade():
    op.drop_index("uq_etl_runs_one_running_per_source", table_name="etl_runs")
    with op.batch_alter_table("etl_runs", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
