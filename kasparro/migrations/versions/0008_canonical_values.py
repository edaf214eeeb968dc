"""Stored values rewritten in their one canonical text: both engines compare and serve them alike.

The parser now gives every notation of a number one text (``parsing.canonical_text``): no
exponent, no zero ending a fraction, no trailing point, no ``-0``. Values stored before kept the
notation their source wrote (``1700000000000.00``, ``100.0``), which SQLite compares as text, so
the same value restated another way counted as updated there and not on PostgreSQL. This
rewrites them, in one set-based statement per engine that touches only the rows that change:
on PostgreSQL ``trim_scale`` drops a NUMERIC's trailing zeros; on SQLite, where an exact decimal
is text written by ``format(value, "f")`` (an optional ``-``, digits, an optional fraction),
trailing zeros of a fraction, then a bare point, then a ``-0`` are taken off.

The values served may change their text: the data version moves, so kept responses are dropped.
The ``unified_records`` counts do not move (no counted column changes).

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

MIGRATIONS_SCOPE = "migrations"  # the data_versions counter a migration that rewrites data moves

SQLITE_TRIMMED = "rtrim(rtrim(value, '0'), '.')"


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE unified_records SET value = trim_scale(value)"
            " WHERE scale(value) > min_scale(value)"
        )
    else:
        op.execute(
            "UPDATE unified_records SET value = CASE"
            f" WHEN instr(value, '.') = 0 OR {SQLITE_TRIMMED} = '-0' THEN '0'"
            f" ELSE {SQLITE_TRIMMED} END"
            " WHERE (instr(value, '.') > 0 AND (value LIKE '%0' OR value LIKE '%.'))"
            " OR value = '-0'"
        )
    op.execute(
        "INSERT INTO data_versions (scope, version) VALUES"
        f" ('{MIGRATIONS_SCOPE}', 1) ON CONFLICT (scope) DO UPDATE"
        " SET version = data_versions.version + 1"
    )


def downgrade():
    # The canonical text is a valid text of the same value for every earlier version.
    pass
