"""PostgreSQL's executed plans of the statements a read sends, and synthetic observations to plan.

Not a test module: the plan tests import these helpers.
"""

import json
from collections.abc import Callable, Iterator
from datetime import timedelta

import sqlalchemy as sa

from kasparro.extensions import db


def reads_observations(statement: str) -> bool:
    """Return whether a statement reads unified_records."""
    return "unified_records" in statement


def executed_plans(
    call: Callable[[], object], matches: Callable[[str], bool] = reads_observations
) -> list[dict]:
    """Run ``call``; return PostgreSQL's executed plan of each statement it sent that matches."""
    seen = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if matches(statement):
            seen.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    return [executed_plan(statement, parameters) for statement, parameters in seen]


def executed_plan(statement: str, parameters) -> dict:
    """Run one statement under EXPLAIN (ANALYZE, FORMAT JSON); return its top plan node."""
    explained = (
        db.session.connection()
        .exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
        .scalar()
    )
    document = json.loads(explained) if isinstance(explained, str) else explained
    return document[0]["Plan"]


def nodes(plan: dict) -> Iterator[dict]:
    """Yield every node of a plan."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def unified_scans(plan: dict) -> list[dict]:
    """Return the plan's scans of unified_records."""
    return [node for node in nodes(plan) if node.get("Relation Name") == "unified_records"]


def unified_indexes(plan: dict) -> set[str]:
    """Return the indexes the plan reads unified_records through (bitmap scans included)."""
    scans = unified_scans(plan)
    assert scans and all(node["Node Type"] != "Seq Scan" for node in scans), plan
    return {node["Index Name"] for scan in scans for node in nodes(scan) if "Index Name" in node}


def fill_unified_records(rows: int, assets: int, step: timedelta, with_assets: bool) -> None:
    """Store ``rows`` observations of ``assets`` assets, 3 sources and 3 metrics, ``step`` apart.

    Observation ``i`` is of ``asset{i % assets}``, from source ``i % 3``, of metric ``(i / 3) % 3``,
    ``i`` steps before now; all by one run. With ``with_assets`` the assets are stored too.
    """
    db.session.execute(
        sa.text(
            "INSERT INTO etl_runs (id, source, status, trigger, started_at, rows_read, inserted,"
            " updated, unchanged, rejected, unresolved)"
            " VALUES (1, 'csv1', 'SUCCESS', 'cli', now(), 0, 0, 0, 0, 0, 0)"
        )
    )
    if with_assets:
        db.session.execute(
            sa.text(
                "INSERT INTO assets (id, symbol, name, origin, updated_at)"
                " SELECT 'asset' || i, 's' || i, 'Coin ' || i, 'seed', now()"
                " FROM generate_series(0, :assets - 1) AS i"
            ),
            {"assets": assets},
        )
    db.session.execute(
        sa.text(
            "INSERT INTO unified_records (source, external_id, asset_id, symbol, name, metric,"
            " value, currency, timestamp, ingested_at, run_id)"
            " SELECT (ARRAY['coingecko_api', 'csv1', 'csv2'])[1 + i % 3], 'coin' || i % :assets,"
            " 'asset' || i % :assets, 'S' || i % :assets, 'Coin', (ARRAY['price_usd',"
            " 'market_cap_usd', 'volume_24h_usd'])[1 + (i / 3) % 3], i, 'USD',"
            " now() - i * CAST(:step AS interval), now(), 1 FROM generate_series(1, :rows) AS i"
        ),
        {"assets": assets, "rows": rows, "step": step},
    )
    db.session.commit()
    db.session.execute(sa.text("ANALYZE"))
    db.session.commit()
