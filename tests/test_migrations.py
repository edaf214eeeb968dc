"""The migration builds the same schema on PostgreSQL and SQLite, and matches the models."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from kasparro.db_types import utcnow
from kasparro.etl.sources import SOURCES
from kasparro.etl.versions import data_version
from kasparro.extensions import db

# The tables every deployment has; each source adds its raw table.
CORE_TABLES = {
    "asset_aliases",
    "assets",
    "checkpoints",
    "csv_generations",
    "data_versions",
    "etl_runs",
    "rejected_counts",
    "rejected_records",
    "run_summaries",
    "unified_counts",
    "unified_records",
    "unified_totals",
}


def describe_schema(engine) -> dict:
    """Return tables with their columns, unique constraints and indexes, engine-neutrally."""
    inspector = sa.inspect(engine)
    schema = {}
    for table in inspector.get_table_names():
        if table == "alembic_version":
            continue
        schema[table] = {
            "columns": sorted((c["name"], c["nullable"]) for c in inspector.get_columns(table)),
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "unique": sorted(
                tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
                if not i.get("duplicates_constraint")  # PostgreSQL lists unique constraints twice
            ),
        }
    return schema


def test_migration_gives_the_same_schema_on_postgresql_and_sqlite(postgres_url, sqlite_template):
    engines = [sa.create_engine(postgres_url), sa.create_engine(f"sqlite:///{sqlite_template}")]
    try:
        postgres, sqlite = (describe_schema(engine) for engine in engines)
    finally:
        for engine in engines:
            engine.dispose()

    assert postgres == sqlite
    assert set(postgres) == CORE_TABLES | {
        source.raw_model.__tablename__ for source in SOURCES.values()
    }
    assert ("ix_unified_asset_timestamp_id", ("asset_id", "timestamp", "id"), False) in postgres[
        "unified_records"
    ]["indexes"]


def test_models_and_migration_agree(app):
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        assert compare_metadata(context, db.metadata) == []


# Values as an earlier version stored them, each with the one text the migration leaves.
STORED_VALUES = {
    "coin-a": ("1700000000000.00", "1700000000000"),
    "coin-b": ("100.0", "100"),
    "coin-c": ("0.10", "0.1"),
    "coin-d": ("0.000", "0"),
    "coin-e": ("1000", "1000"),
    "coin-f": ("0.0000001", "0.0000001"),
    "coin-g": ("87387.12", "87387.12"),
    "coin-h": ("-0.00", "0"),
    "coin-i": ("-0", "0"),
    "coin-j": ("5.", "5"),
}


def stored_value_texts() -> dict[str, str]:
    """Return each observation's value as the database itself writes it as text."""
    rows = db.session.execute(
        sa.text("SELECT external_id, CAST(value AS TEXT) FROM unified_records")
    )
    return dict(rows.tuples().all())


def test_the_migration_rewrites_stored_values_in_their_canonical_text(app):
    db.session.remove()
    downgrade(revision="0007")
    try:
        # As an earlier version wrote them: the source's own notation, on either engine.
        run_id = db.session.execute(
            sa.text(
                "INSERT INTO etl_runs (source, status, trigger, started_at, rows_read, inserted,"
                " updated, unchanged, rejected, unresolved)"
                " VALUES ('csv1', 'SUCCESS', 'cli', :now, 0, 0, 0, 0, 0, 0) RETURNING id"
            ),
            {"now": utcnow()},
        ).scalar_one()
        for external_id, (text, _) in STORED_VALUES.items():
            db.session.execute(
                sa.text(
                    "INSERT INTO unified_records (source, external_id, metric, value, currency,"
                    " timestamp, ingested_at, run_id)"
                    " VALUES ('csv1', :id, 'price_usd', :value, 'USD', :at, :at, :run)"
                ),
                {"id": external_id, "value": text, "at": utcnow(), "run": run_id},
            )
        db.session.commit()
        before = stored_value_texts()
        assert (before["coin-a"], before["coin-b"]) == ("1700000000000.00", "100.0")
        version = data_version(db.session)
        db.session.remove()
    finally:
        upgrade()

    assert stored_value_texts() == {key: text for key, (_, text) in STORED_VALUES.items()}
    assert data_version(db.session) > version  # kept responses hold the old texts: dropped
