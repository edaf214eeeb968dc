"""On PostgreSQL, every /data filter is served by an index, and a cursor page costs the same at
any depth: the page starts at the cursor instead of scanning past every newer row."""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from kasparro.extensions import db
from kasparro.models import UnifiedRecord
from kasparro.read.observations import encode_cursor, page_unified_records
from tests.plans import executed_plans, fill_unified_records, nodes

ROWS = 30_000
FILTERS = [{}, {"source": "csv1"}, {"asset": "asset7"}, {"symbol": "S7"}, {"metric": "price_usd"}]
FILTER_COLUMNS = {"source": "source", "asset": "asset_id", "symbol": "symbol", "metric": "metric"}


@pytest.fixture
def filled(postgres_app):
    """Fill unified_records with ROWS observations over 3 sources, 3 metrics and 300 assets."""
    fill_unified_records(rows=ROWS, assets=300, step=timedelta(seconds=1), with_assets=False)
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
    [plan] = executed_plans(
        lambda: page_unified_records(db.session, {"page_size": 10, "page": 1, **args}),
        lambda statement: "ORDER BY" in statement,
    )
    return plan


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
