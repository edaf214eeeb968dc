"""The migration builds the same schema on PostgreSQL and SQLite, and matches the models."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from kasparro.db_types import utcnow
from kasparro.etl.sources import SOURCES
from kasparro.etl.versions import data_version
from kasparro.extensions import db
from kasparro.models import RejectedCount, RejectedRecord
from tests.csv_files import CSV1_HEADER, write

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


BAD_LINE = "solana,Solana,12x.5,2025-12-27T10:46:21Z\n"
OTHER_BAD_LINE = "cardano,Cardano,N/A,2025-12-27T10:46:21Z\n"
GOOD_LINE = "bitcoin,Bitcoin,87387,2025-12-27T10:46:21Z\n"


def rejection_keys() -> dict[tuple[str, str], str]:
    """Return each rejection's content key, by source and record key."""
    rows = db.session.execute(
        sa.select(RejectedRecord.source, RejectedRecord.record_key, RejectedRecord.content_key)
    )
    return {(source, record): content for source, record, content in rows}


def rejected_counts() -> tuple[dict[str, int], dict[str, int]]:
    """Return rejections per source as the database keeps them, and as counted from the rows."""
    kept = dict(db.session.execute(sa.select(RejectedCount.source, RejectedCount.records)).all())
    counted = db.session.execute(
        sa.select(RejectedRecord.source, sa.func.count()).group_by(RejectedRecord.source)
    )
    return {source: n for source, n in kept.items() if n}, dict(counted.tuples().all())


def test_the_migration_keys_stored_rejections_by_content_and_keeps_one_of_each(
    app, run_etl, csv_paths
):
    path = csv_paths["CSV1_PATH"]
    lines = [BAD_LINE, GOOD_LINE, BAD_LINE, OTHER_BAD_LINE]
    write(path, CSV1_HEADER + "".join(lines))
    run_etl("csv1")
    # Read again from the top, one line further down: each bad line is known.
    write(path, CSV1_HEADER + "".join([GOOD_LINE.replace("bitcoin", "tether"), *lines]))
    run_etl("csv1")
    keys = rejection_keys()
    assert len(keys) == 3
    db.session.remove()

    downgrade(revision="0008")
    try:
        # As an earlier version stored them: the second reading's bad lines recorded again,
        # and a rejection whose raw row is gone.
        run_id = db.session.scalar(sa.text("SELECT max(id) FROM etl_runs"))
        for record_key, source in [("2:3", "csv1"), ("2:5", "csv1"), ("2:6", "csv1")] + [
            ("bitcoin:2025-12-27T10:46:21Z", "coingecko_api")
        ]:
            db.session.execute(
                sa.text(
                    "INSERT INTO rejected_records (run_id, source, record_key, reference, raw_text,"
                    " reason, rejected_at) VALUES (:run, :source, :key, 'line', 'text', 'bad', :at)"
                ),
                {"run": run_id, "source": source, "key": record_key, "at": utcnow()},
            )
        db.session.commit()
        assert rejected_counts() == ({"csv1": 6, "coingecko_api": 1},) * 2
        version = data_version(db.session)
        db.session.remove()
    finally:
        upgrade()

    assert rejection_keys() == {
        **keys,
        ("coingecko_api", "bitcoin:2025-12-27T10:46:21Z"): "bitcoin:2025-12-27T10:46:21Z",
    }
    assert rejected_counts() == ({"csv1": 3, "coingecko_api": 1},) * 2
    assert data_version(db.session) > version
    # The triggers that keep the count are there, and a later reading adds nothing.
    write(path, CSV1_HEADER + "".join([*lines, GOOD_LINE.replace("bitcoin", "ripple")]))
    assert run_etl("csv1")["csv1"].rejected == 3
    assert rejected_counts() == ({"csv1": 3, "coingecko_api": 1},) * 2
    write(path, CSV1_HEADER + "".join([BAD_LINE.replace("12x", "13x"), *lines]))
    run_etl("csv1")
    assert rejected_counts() == ({"csv1": 4, "coingecko_api": 1},) * 2
