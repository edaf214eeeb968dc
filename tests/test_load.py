"""Set-based writes: rows of different shapes for one table in one transaction, on both engines."""

import sqlalchemy as sa

from kasparro.etl.load import insert_many
from kasparro.extensions import db
from kasparro.models import EtlRun


def test_batches_of_one_table_with_different_columns_keep_their_own_values(app):
    # Same table, same number of columns, different names: each batch stages its own shape.
    first = [{"source": "csv1", "status": "FAILED", "trigger": "cli", "task_id": "t-1"}]
    second = [{"source": "csv2", "status": "FAILED", "trigger": "api", "error": "boom"}]

    for rows in (first, second, first):
        insert_many(db.session, EtlRun, rows, lambda insert: insert)
    db.session.commit()

    stored = db.session.execute(
        sa.select(EtlRun.source, EtlRun.trigger, EtlRun.task_id, EtlRun.error).order_by(EtlRun.id)
    ).all()
    assert [tuple(row) for row in stored] == [
        ("csv1", "cli", "t-1", None),
        ("csv2", "api", None, "boom"),
        ("csv1", "cli", "t-1", None),
    ]
