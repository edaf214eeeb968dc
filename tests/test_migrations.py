"""The migration builds the same schema on PostgreSQL and SQLite, and matches the models."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from kasparro.etl.sources import SOURCES
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
