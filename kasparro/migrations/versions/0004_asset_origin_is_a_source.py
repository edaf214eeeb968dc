"""An asset's origin is the name of the source that vouched for it, or ``seed``.

Origins were ``coingecko``; they become the source's own name, ``coingecko_api``, and the column
is as wide as a source name.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.alter_column(
            "origin", existing_type=sa.String(length=16), type_=sa.String(length=32)
        )
    op.execute("UPDATE assets SET origin = 'coingecko_api' WHERE origin = 'coingecko'")


def downgrade():
    op.execute("UPDATE assets SET origin = 'coingecko' WHERE origin = 'coingecko_api'")
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.alter_column(
            "origin", existing_type=sa.String(length=32), type_=sa.String(length=16)
        )
