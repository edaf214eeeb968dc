"""On PostgreSQL, run comparison and jump detection read unified_records through its indexes only.

Movers are one probe of ``ix_unified_asset_metric_timestamp_id`` per asset and metric for each
run; a page of jumps reads a bounded number of observations, each with one probe for the one
before it. Neither scans the table.
"""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from kasparro.db_types import utcnow
from kasparro.extensions import db
from kasparro.models import EtlRun
from kasparro.read import anomalies as read_anomalies
from kasparro.read.anomalies import AnomalyQuery
from kasparro.read.run_outliers import Thresholds
from kasparro.read.runs import movers
from tests.plans import executed_plans, unified_scans

ROWS = 30_000
ASSETS = 300
THRESHOLDS = Thresholds(mad=3.5, history_runs=20, jump_percent=50.0, spread_percent=5.0)


@pytest.fixture
def filled(postgres_app):
    """Store ROWS observations of 3 sources, ASSETS assets and 3 metrics, by two runs.

    Each asset metric's observations alternate between the sources.

    The first run stored the older half; the second, an hour later, the newer half.
    """
    now = utcnow()
    for run_id, finished in ((1, now - timedelta(hours=1)), (2, now)):
        db.session.add(
            EtlRun(id=run_id, source="csv1", status="SUCCESS", trigger="cli",
                   started_at=finished, finished_at=finished, duration_ms=0, rows_read=0,
                   inserted=0, updated=0, unchanged=0, rejected=0, unresolved=0)
        )  # fmt: skip
    db.session.commit()
    db.session.execute(
        sa.text(
            "INSERT INTO unified_records (source, external_id, asset_id, symbol, name, metric,"
            " value, currency, timestamp, ingested_at, run_id)"
            " SELECT (ARRAY['coingecko_api', 'csv1', 'csv2'])[1 + i % 3],"
            " 'coin' || (i / 3) % :assets, 'asset' || (i / 3) % :assets, 'S', 'Coin',"
            " (ARRAY['price_usd', 'market_cap_usd',"
            " 'volume_24h_usd'])[1 + (i / (3 * :assets)) % 3], 1000 + i % 7, 'USD',"
            " :now - i * interval '1 second',"
            " CASE WHEN i > :rows / 2 THEN :first ELSE :second END,"
            " CASE WHEN i > :rows / 2 THEN 1 ELSE 2 END"
            " FROM generate_series(1, :rows) AS i"
        ),
        {"rows": ROWS, "assets": ASSETS, "now": now, "first": now - timedelta(hours=1),
         "second": now},
    )  # fmt: skip
    db.session.commit()
    db.session.execute(sa.text("ANALYZE"))
    db.session.commit()
    return now


def rows_read(scans: list[dict]) -> int:
    """Return how many rows the scans read, over all their loops, filtered ones included."""
    return sum(
        (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
        for node in scans
    )


def test_movers_probe_the_asset_index_once_per_asset_metric_and_run(filled):
    run_a, run_b = db.session.get(EtlRun, 1), db.session.get(EtlRun, 2)

    [plan] = executed_plans(lambda: movers(db.session, run_a, run_b, 10))

    scans = unified_scans(plan)
    assert {node["Node Type"] for node in scans} <= {"Index Scan", "Index Scan Backward"}, plan
    assert {node["Index Name"] for node in scans} == {"ix_unified_asset_metric_timestamp_id"}
    # Two probes (one per run) for each of csv1's asset metrics.
    pairs = db.session.scalar(sa.text("SELECT count(*) FROM unified_counts WHERE source = 'csv1'"))
    assert [node["Actual Loops"] for node in scans] == [pairs] * 2
    # Each probe reads the asset metric's newest rows until one of csv1's stored by that run:
    # about the rows stored after the run (half the table, here, for run_a), never the rest.
    assert rows_read(scans) <= ROWS / 2 + pairs * 2 * 3


def test_a_page_of_jumps_reads_a_bounded_number_of_observations_through_indexes(
    filled, monkeypatch
):
    # A page's share of this small table as the default's is of a million rows or more:
    # the planner reads a large share of a small table whole, as it should.
    monkeypatch.setattr(read_anomalies, "JUMP_ROWS_PER_PAGE", 200)
    query = AnomalyQuery(filled - timedelta(days=1), None, THRESHOLDS)

    plans = executed_plans(lambda: read_anomalies._scan_jumps(db.session, query, None))

    scans = [scan for plan in plans for scan in unified_scans(plan)]
    assert all(node["Node Type"] != "Seq Scan" for node in scans), plans
    assert "ix_unified_asset_metric_timestamp_id" in {node.get("Index Name") for node in scans}
    # A page reads JUMP_ROWS_PER_PAGE observations, each with a probe that may pass other
    # sources' rows of the same asset metric before reaching its own, then the ones found.
    budget = read_anomalies.JUMP_ROWS_PER_PAGE
    assert rows_read(scans) <= budget * 6, rows_read(scans)
