"""Set-based writes: rows of different shapes for one table in one transaction, on both engines."""

import psycopg
import pytest
import sqlalchemy as sa

from kasparro.etl.load import insert_many
from kasparro.etl.runs import fail_run, start_run
from kasparro.extensions import db
from kasparro.models import EtlRun
from tests.conftest import PG_ADMIN_URL


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


def test_a_connection_lost_during_a_load_fails_the_run_and_frees_the_source(postgres_app):
    run_id = start_run(db.session, "csv1", "cli", postgres_app.config)
    backend = db.session.scalar(sa.text("SELECT pg_backend_pid()"))  # the load's connection
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [backend])
    row = {"source": "csv1", "status": "FAILED", "trigger": "cli"}

    with pytest.raises(sa.exc.OperationalError) as lost:
        insert_many(db.session, EtlRun, [row], lambda insert: insert)
    status = fail_run(db.session, run_id, lost.value)

    run = db.session.get(EtlRun, run_id)
    assert lost.value.connection_invalidated
    assert (status, run.status) == ("FAILED", "FAILED")
    assert run.error.startswith("database error: ") and "\n" not in run.error
    assert start_run(db.session, "csv1", "cli", postgres_app.config) > run_id  # the lock is free
