"""On PostgreSQL, every /data filter is served by an index, and a cursor page costs the same at
any depth: the page starts at the cursor instead of scanning past every newer row."""

import json

import pytest
import sqlalchemy as sa

from kasparro.extensions import db
from kasparro.models import UnifiedRecord
from kasparro.queries import encode_cursor, page_unified_records

ROWS = 30_000
FILTERS = [{}, {"source": "csv1"}, {"asset": "asset7"}, {"symbol": "S7"}, {"metric": "price_usd"}]
FILTER_COLUMNS = {"source": "source", "asset": "asset_id", "symbol": "symbol", "metric": "metric"}


@pytest.fixture
def filled(postgres_app):
    """Fill unified_records with ROWS observations over 3 sources, 3 metrics and 300 assets."""
    db.session.execute(
        sa.text(
            "INSERT INTO etl_runs (id, source, status, trigger, started_at, rows_read, inserted,"
            " updated, unchanged, rejected, unresolved)"
            " VALUES (1, 'csv1', 'SUCCESS', 'cli', now(), 0, 0, 0, 0, 0, 0)"
        )
    )
    db.session.execute(
        sa.text(
            "INSERT INTO unified_records (source, external_id, asset_id, symbol, name, metric,"
            " value, currency, timestamp, ingested_at, run_id)"
            " SELECT (ARRAY['coingecko_api', 'csv1', 'csv2'])[1 + i % 3], 'coin' || i % 300,"
            " 'asset' || i % 300, 'S' || i % 300, 'Coin', (ARRAY['price_usd', 'market_cap_usd',"
            " 'volume_24h_usd'])[1 + (i / 3) % 3], i, 'USD', now() - i * interval '1 second',"
            " now(), 1 FROM generate_series(1, :rows) AS i"
        ),
        {"rows": ROWS},
    )
    db.session.commit()
    db.session.execute(sa.text("ANALYZE unified_records"))
    db.session.commit()
    return postgres_app


def cursor_at(depth: float, args: dict) -> str:
    """Return the cursor just after the row ``depth`` of the way down the filtered order."""
    conditions = [getattr(UnifiedRecord, FILTER_COLUMNS[name]) == args[name] for name in args]
    matching = db.session.scalar(
        sa.select(sa.func.count()).select_from(UnifiedRecord).where(*conditions)
    )
    record = db.session.scalars(
        sa.select(UnifiedRecord)
        .where(*conditions)
        .order_by(UnifiedRecord.timestamp.desc(), UnifiedRecord.id.desc())
        .offset(int(matching * depth))
        .limit(1)
    ).one()
    return encode_cursor(record)


def page_plan(args: dict) -> dict:
    """Return PostgreSQL's executed plan of the page query the API runs for ``args``."""
    seen = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "ORDER BY" in statement:
            seen.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        page_unified_records(db.session, {"page_size": 10, "page": 1, **args})
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    [(statement, parameters)] = seen
    explained = db.session.connection().exec_driver_sql(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
    )
    return explained_plan(explained)


def explained_plan(result) -> dict:
    """Return the top plan node of an EXPLAIN (FORMAT JSON) result."""
    value = result.scalar()
    document = json.loads(value) if isinstance(value, str) else value
    return document[0]["Plan"]


def nodes(plan: dict):
    """Yield every node of a plan."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


@pytest.mark.parametrize("args", FILTERS, ids=lambda args: ",".join(args) or "none")
@pytest.mark.parametrize("depth", [0.0, 0.9])
def test_a_page_reads_only_about_its_own_rows_at_any_depth(filled, args, depth):
    plan = page_plan({**args, "cursor": cursor_at(depth, args)} if depth else args)

    scans = [node for node in nodes(plan) if "Scan" in node["Node Type"]]
    read = sum(node["Actual Rows"] + node.get("Rows Removed by Filter", 0) for node in scans)
    assert all(node["Node Type"] != "Seq Scan" for node in scans), plan
    assert any(node.get("Index Name", "").startswith("ix_unified_") for node in scans), plan
    # A page of 10 reads at most a few dozen rows, whether it is near the top or 90% deep.
    assert read <= 200, f"{read} rows read for a page of 10"
