"""Counts and run summaries kept by the database stay exact through every writer, and the reads
that use them (/data totals, /stats, /health) no longer read whole tables.

Every aggregate is checked against the same numbers counted from the tables themselves.
"""

import itertools
import random
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade
from sqlalchemy.orm import Session

from kasparro.etl.load import upsert_unified
from kasparro.etl.retention import apply_retention
from kasparro.etl.runs import start_run
from kasparro.extensions import db
from kasparro.models import (
    EtlRun,
    RejectedCount,
    RejectedRecord,
    RunStatus,
    RunSummary,
    UnifiedCount,
    UnifiedRecord,
    UnifiedTotal,
)
from kasparro.read.observations import EXACT_COUNT_LIMIT
from tests.coingecko_imitation import BASE_TIME
from tests.plans import executed_plan, nodes

SOURCES = ("coingecko_api", "csv1", "csv2")


def recounted() -> dict:
    """Return every maintained aggregate as counted from the tables themselves."""
    unified, runs = UnifiedRecord, EtlRun
    unresolved = sa.func.sum(sa.case((unified.asset_id.is_(None), 1), else_=0))
    totals = db.session.execute(
        sa.select(unified.source, unified.metric, sa.func.count(), unresolved).group_by(
            unified.source, unified.metric
        )
    )
    counts = db.session.execute(
        sa.select(unified.asset_id, unified.source, unified.metric, sa.func.count())
        .where(unified.asset_id.is_not(None))
        .group_by(unified.asset_id, unified.source, unified.metric)
    )
    rejected = db.session.execute(
        sa.select(RejectedRecord.source, sa.func.count()).group_by(RejectedRecord.source)
    )
    summaries = {}
    for source in db.session.scalars(sa.select(runs.source).distinct()):
        of_source = db.session.scalars(sa.select(runs).where(runs.source == source)).all()
        statuses = [run.status for run in of_source]

        def last(statuses, of_source=of_source):
            finished = [run.finished_at for run in of_source if run.status in statuses]
            return max(finished, default=None)

        summaries[source] = {
            "records_processed": sum(run.rows_read for run in of_source),
            "run_counts": {status: statuses.count(status) for status in set(statuses)},
            "last_run_id": max(
                (run.id for run in of_source if run.status != RunStatus.SKIPPED), default=None
            ),
            "last_success_at": last((RunStatus.SUCCESS, RunStatus.PARTIAL)),
            "last_failure_at": last((RunStatus.FAILED,)),
        }
    return {
        "totals": {(source, metric): (n, u) for source, metric, n, u in totals},
        "counts": {(asset, source, metric): n for asset, source, metric, n in counts},
        "rejected": dict(rejected.tuples().all()),
        "runs": summaries,
    }


def maintained() -> dict:
    """Return every maintained aggregate as the database keeps it (zero counts left out)."""
    scalars = db.session.scalars
    return {
        "totals": {
            (t.source, t.metric): (t.records, t.unresolved)
            for t in scalars(sa.select(UnifiedTotal))
            if t.records or t.unresolved
        },
        "counts": {
            (c.asset_id, c.source, c.metric): c.records
            for c in scalars(sa.select(UnifiedCount))
            if c.records
        },
        "rejected": {r.source: r.records for r in scalars(sa.select(RejectedCount)) if r.records},
        "runs": {
            s.source: {
                "records_processed": s.records_processed,
                "run_counts": s.run_counts(),
                "last_run_id": s.last_run_id,
                "last_success_at": s.last_success_at,
                "last_failure_at": s.last_failure_at,
            }
            for s in scalars(sa.select(RunSummary))
        },
    }


def assert_exact() -> dict:
    """Check that every maintained aggregate equals its recount; return the aggregates."""
    db.session.expire_all()
    kept = maintained()
    assert kept == recounted()
    return kept


def observation(n: int, **overrides) -> dict:
    """Return one unified row of a hand-made batch, distinct for each ``n``."""
    return {
        "source": SOURCES[n % 3],
        "external_id": f"obs-{n}",
        "asset_id": ("bitcoin", "ethereum", None)[(n // 2) % 3],
        "symbol": "SYM",
        "name": "Coin",
        "metric": ("price_usd", "market_cap_usd")[n % 2],
        "value": Decimal(n),
        "currency": "USD",
        "timestamp": BASE_TIME + timedelta(hours=n),
        "run_id": None,
        "raw_id": None,
        **overrides,
    }


def get_json(client, path: str, **params) -> dict:
    """GET ``path`` and return its JSON body, checking it answered 200."""
    response = client.get(path, query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


# ---------------------------------------------------------------------------------------------
# the counts follow every writer


def test_counts_are_exact_after_runs_of_every_source(run_etl, coingecko):
    run_etl(*SOURCES)
    coingecko.move_price("bitcoin", 90000)
    run_etl(*SOURCES)

    kept = assert_exact()

    assert {source for source, _ in kept["totals"]} == set(SOURCES)
    assert {source for _, source, _ in kept["counts"]} == set(SOURCES)
    assert kept["rejected"]["csv2"] == 4
    assert kept["runs"]["csv1"]["run_counts"] == {"SUCCESS": 2}


def test_counts_follow_upserts_that_insert_update_move_assets_and_change_nothing(app):
    run_id = start_run(db.session, "csv1", "cli", app.config)
    rows = [observation(n, run_id=run_id) for n in range(30)]

    def upsert(batch):
        counts = upsert_unified(db.session, batch)
        db.session.commit()
        assert_exact()
        return counts

    assert upsert(rows).inserted == 30
    assert upsert(rows).unchanged == 30  # a no-op upsert
    rows = [{**row, "value": row["value"] + 1} for row in rows]
    assert upsert(rows).updated == 30
    elsewhere = {"bitcoin": None, None: "solana", "ethereum": "bitcoin"}
    moved = [{**row, "asset_id": elsewhere[row["asset_id"]]} for row in rows[:12]]
    new = [observation(n, run_id=run_id) for n in range(30, 40)]
    counts = upsert([*moved, *rows[12:20], *new])  # moved assets, no-ops and inserts at once
    assert (counts.inserted, counts.updated, counts.unchanged) == (10, 12, 8)
    # A back-fill that resolves assets, and a delete, written by hand.
    db.session.execute(
        sa.update(UnifiedRecord).where(UnifiedRecord.asset_id.is_(None)).values(asset_id="tether")
    )
    db.session.execute(sa.delete(UnifiedRecord).where(UnifiedRecord.metric == "price_usd"))
    db.session.commit()

    kept = assert_exact()
    assert {metric for _, metric in kept["totals"]} == {"market_cap_usd"}
    assert not any(unresolved for _, unresolved in kept["totals"].values())
    assert {"bitcoin", "solana", "tether"} <= {asset for asset, _, _ in kept["counts"]}


def test_counts_follow_retention_deletes(app, run_etl, coingecko):
    run_etl("coingecko_api", "csv1", "csv2")
    coingecko.move_price("bitcoin", 90000, seconds_later=20 * 86400)
    run_etl("coingecko_api")
    before = assert_exact()
    settings = {
        **app.config,
        "RETENTION_UNIFIED_DAYS": 15,
        "RETENTION_BATCH_SIZE": 4,
        "RETENTION_PAUSE_SECONDS": 0.0,
    }

    report = apply_retention(db.session, settings, now=BASE_TIME + timedelta(days=30))

    after = assert_exact()
    assert report.unified > 0
    assert sum(n for n, _ in after["totals"].values()) == (
        sum(n for n, _ in before["totals"].values()) - report.unified
    )


@pytest.mark.parametrize("failure", ["csv2:on_commit", "csv2:after_rows:3"])
def test_a_failed_batch_leaves_the_counts_as_they_were(app, run_etl, failure):
    run_etl("csv1")
    before = assert_exact()
    app.config["ETL_INJECT_FAILURE"] = failure
    try:
        failed = run_etl("csv2")["csv2"]
    finally:
        app.config["ETL_INJECT_FAILURE"] = ""

    assert failed.status == RunStatus.FAILED
    after = assert_exact()
    assert {key: after[key] for key in ("totals", "counts", "rejected")} == {
        key: before[key] for key in ("totals", "counts", "rejected")
    }
    assert after["runs"]["csv2"]["run_counts"] == {"FAILED": 1}


def test_the_migration_counts_what_was_stored_before_it(app, run_etl):
    run_etl(*SOURCES)
    kept = assert_exact()
    db.session.remove()

    try:
        downgrade(revision="0005")
        assert "unified_counts" not in sa.inspect(db.engine).get_table_names()
    finally:
        upgrade()

    assert assert_exact() == kept


def test_concurrent_etl_batches_and_deletes_keep_the_counts_exact_without_deadlocks(
    postgres_app,
):
    run_id = start_run(db.session, "csv1", "cli", postgres_app.config)
    assets = [f"asset{n}" for n in range(50)]
    shuffled = random.Random(7)
    failures = []

    def observations(first: int, count: int) -> list[dict]:
        return [
            observation(n, run_id=run_id, asset_id=shuffled.choice(assets))
            for n in range(first, first + count)
        ]

    upsert_unified(db.session, observations(0, 400))
    db.session.commit()
    engine = db.engine  # the threads run outside the app's context

    # The two touch different observations (a batch the newer ones, the deletes the oldest),
    # and the same counts: every asset's, and the totals of both metrics.
    def batches():  # new rows, and stored rows moved to other assets, in a random order
        with Session(engine) as session:
            for batch in range(30):
                rows = observations(400 + batch * 20, 20) + observations(200 + batch * 5, 20)
                shuffled.shuffle(rows)
                upsert_unified(session, rows)
                session.commit()

    def deletes():  # the oldest rows, whatever their asset, as retention deletes them
        with Session(engine) as session:
            for _ in range(25):
                oldest = sa.select(UnifiedRecord.id).order_by(UnifiedRecord.timestamp).limit(7)
                session.execute(sa.delete(UnifiedRecord).where(UnifiedRecord.id.in_(oldest)))
                session.commit()

    def run(work):
        try:
            work()
        except Exception as exc:  # a deadlock, or any other failure, fails the test below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(work,)) for work in (batches, deletes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert sum(n for n, _ in assert_exact()["totals"].values()) == 400 + 30 * 20 - 25 * 7


# ---------------------------------------------------------------------------------------------
# /data totals


@pytest.mark.parametrize(
    "filters",
    [
        dict(combination)
        for size in range(4)
        for combination in itertools.combinations(
            [("source", "csv2"), ("metric", "market_cap_usd"), ("asset", "bitcoin")], size
        )
    ],
    ids=lambda filters: "&".join(filters) or "none",
)
def test_totals_under_source_metric_and_asset_are_exact(client, run_etl, filters):
    run_etl(*SOURCES)
    columns = {
        "source": UnifiedRecord.source,
        "metric": UnifiedRecord.metric,
        "asset": UnifiedRecord.asset_id,
    }
    matching = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(UnifiedRecord)
        .where(*(columns[name] == value for name, value in filters.items()))
    )

    pagination = get_json(client, "/data", page_size=3, **filters)["pagination"]

    assert matching > 0
    assert (pagination["total"], pagination["total_is_estimate"]) == (matching, False)
    assert pagination["total_pages"] == -(-matching // 3)


@pytest.mark.parametrize(
    "url",
    [
        "/data?source=csv2&metric=price_usd",  # a combination with no records
        "/data?source=csv1&page=9",  # past the last page
        "/data?asset=nothing-of-the-kind",
    ],
)
def test_a_page_past_an_exact_total_is_answered_without_reading_records(client, run_etl, url):
    run_etl("csv1", "csv2")

    statements = statements_of(client, url)
    body = client.get(url).get_json()

    assert body["data"] == []
    assert body["pagination"]["total_is_estimate"] is False
    assert not [sql for sql, _ in statements if "FROM unified_records" in sql]


def test_unresolved_observations_count_under_no_asset(app, client):
    run_id = start_run(db.session, "csv1", "cli", app.config)
    rows = [observation(n, run_id=run_id) for n in range(12)]
    db.session.execute(sa.insert(UnifiedRecord), rows)
    db.session.commit()

    unresolved = sum(1 for row in rows if row["asset_id"] is None)
    stats = get_json(client, "/stats")["sources"]
    assert sum(source["unresolved_records"] for source in stats.values()) == unresolved > 0
    for asset in (" ", "no-such-coin"):  # " " is the asset "" once trimmed
        pagination = get_json(client, "/data", asset=asset)["pagination"]
        assert (pagination["total"], pagination["total_is_estimate"]) == (0, False)


MANY_ROWS = 2 * EXACT_COUNT_LIMIT + 205


@pytest.fixture
def many_records(app):
    """Store MANY_ROWS observations an hour apart: the first 5 of symbol FEW, the rest MANY."""
    run_id = start_run(db.session, "csv1", "cli", app.config)
    rows = [
        observation(n, run_id=run_id, symbol="FEW" if n < 5 else "MANY") for n in range(MANY_ROWS)
    ]
    db.session.execute(sa.insert(UnifiedRecord), rows)
    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text("ANALYZE unified_records"))
        db.session.commit()
    return rows


def hours(n: int) -> str:
    """Return the time of hand-made observation ``n``, as a query argument."""
    return (BASE_TIME + timedelta(hours=n)).isoformat()


def after(n: int):
    return lambda row: row["timestamp"] >= BASE_TIME + timedelta(hours=n)


def before(n: int):
    return lambda row: row["timestamp"] <= BASE_TIME + timedelta(hours=n)


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"symbol": "few"}, lambda row: row["symbol"] == "FEW"),
        ({"since": hours(MANY_ROWS - 40)}, after(MANY_ROWS - 40)),
        ({"until": hours(9)}, before(9)),
        (
            {"source": "csv1", "until": hours(900)},
            lambda row: row["source"] == "csv1" and before(900)(row),
        ),
    ],
    ids=["symbol", "since", "until", "source&until"],
)
def test_a_symbol_or_time_filter_that_matches_few_records_counts_them_exactly(
    client, many_records, filters, keep
):
    matching = sum(1 for row in many_records if keep(row))

    pagination = get_json(client, "/data", **filters)["pagination"]

    assert matching <= EXACT_COUNT_LIMIT
    assert (pagination["total"], pagination["total_is_estimate"]) == (matching, False)


@pytest.mark.parametrize(
    ("filters", "keep", "counted"),
    [
        ({"symbol": "many"}, lambda row: row["symbol"] == "MANY", lambda row: True),
        ({"since": hours(100)}, after(100), lambda row: True),
        ({"until": hours(1500)}, before(1500), lambda row: True),
        (
            {"metric": "price_usd", "since": hours(100)},
            lambda row: row["metric"] == "price_usd" and after(100)(row),
            lambda row: row["metric"] == "price_usd",
        ),
    ],
    ids=["symbol", "since", "until", "metric&since"],
)
def test_a_symbol_or_time_filter_that_matches_many_records_gives_a_bounded_estimate(
    client, many_records, filters, keep, counted
):
    matching = sum(1 for row in many_records if keep(row))
    at_most = sum(1 for row in many_records if counted(row))  # the counted filters' exact total

    body = get_json(client, "/data", page_size=100, **filters)
    pagination = body["pagination"]
    cursor_page = get_json(
        client, "/data", page_size=100, cursor=pagination["next_cursor"], **filters
    )["pagination"]

    assert EXACT_COUNT_LIMIT < matching <= at_most
    assert pagination["total_is_estimate"] is cursor_page["total_is_estimate"] is True
    assert EXACT_COUNT_LIMIT < pagination["total"] <= at_most
    if db.engine.dialect.name == "sqlite":  # SQLite has no planner estimate: the upper bound
        assert pagination["total"] == at_most
    assert pagination["total_pages"] == -(-pagination["total"] // 100)
    assert [item["id"] for item in body["data"]] == [
        item["id"] for item in get_json(client, "/data", page_size=100, **filters)["data"]
    ]
    assert len(body["data"]) == 100


# ---------------------------------------------------------------------------------------------
# on PostgreSQL, the reads touch only a few rows of the large tables

LARGE_TABLES = {"unified_records", "rejected_records", "etl_runs"}
OBSERVATIONS = 60_000
# A scan that stops at a LIMIT may pass rows of other filters first: it reads a few times the
# rows it keeps, never the whole table (OBSERVATIONS is ten times this).
READ_BOUND = 6 * EXACT_COUNT_LIMIT


@pytest.fixture
def large_tables(postgres_app):
    """Fill the run log, the rejections and the observations with thousands of rows each."""
    sources = "(ARRAY['coingecko_api', 'csv1', 'csv2'])[1 + i % 3]"
    for statement in (
        "INSERT INTO etl_runs (source, status, trigger, started_at, finished_at, rows_read,"
        " inserted, updated, unchanged, rejected, unresolved)"
        f" SELECT {sources}, (ARRAY['SUCCESS', 'PARTIAL', 'FAILED', 'SKIPPED'])[1 + i % 4],"
        " 'cli', now() - i * interval '1 minute', now() - i * interval '1 minute', 10, 0, 0, 0,"
        " 0, 0 FROM generate_series(1, 3000) AS i",
        "INSERT INTO rejected_records (run_id, source, record_key, content_key, reference,"
        f" raw_text, reason, rejected_at) SELECT 1 + i % 3000, {sources}, 'key' || i, 'key' || i,"
        " 'line ' || i, 'text', 'bad', now() FROM generate_series(1, 10000) AS i",
        "INSERT INTO unified_records (source, external_id, asset_id, symbol, name, metric, value,"
        f" currency, timestamp, ingested_at, run_id) SELECT {sources}, 'coin' || i % 300,"
        " 'asset' || i % 300, 'S' || i % 300, 'Coin', (ARRAY['price_usd', 'market_cap_usd',"
        " 'volume_24h_usd'])[1 + (i / 3) % 3], i, 'USD', now() - i * interval '1 second', now(),"
        " 1 FROM generate_series(1, :observations) AS i",
    ):
        db.session.execute(sa.text(statement), {"observations": OBSERVATIONS})
    db.session.commit()
    for table in LARGE_TABLES:
        db.session.execute(sa.text(f"ANALYZE {table}"))
    db.session.commit()
    return postgres_app


def statements_of(client, url: str) -> list[tuple[str, dict]]:
    """Return the SQL statements (with their parameters) that answering ``url`` ran."""
    seen = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert client.get(url).status_code == 200
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    return seen


def large_table_scans(statement: str, parameters) -> list[dict]:
    """Return the executed plan's scans of the large tables, for one SELECT statement."""
    plan = executed_plan(statement, parameters)
    return [node for node in nodes(plan) if node.get("Relation Name") in LARGE_TABLES]


@pytest.mark.parametrize(
    "url",
    [
        "/data",
        "/data?source=csv1",
        "/data?metric=price_usd",
        "/data?asset=asset7",
        "/data?source=csv1&metric=price_usd&asset=asset7",
        "/data?symbol=S7",
        "/data?since=2000-01-01T00:00:00Z",
        "/data?until=2100-01-01T00:00:00Z&source=csv2",
        "/stats",
        "/health",
    ],
)
def test_reads_touch_only_a_bounded_number_of_rows_of_the_large_tables(large_tables, url):
    # Rows read, not the kind of scan: a sequential scan that stops at a LIMIT is bounded too.
    statements = statements_of(large_tables.test_client(), url)

    selects = [(s, p) for s, p in statements if s.lstrip().upper().startswith("SELECT")]
    assert selects
    # /stats and /health read the newest run of each source, by its id, and nothing else.
    bound = READ_BOUND if url.startswith("/data") else len(SOURCES)
    for statement, parameters in selects:
        if not url.startswith("/data"):
            assert "unified_records" not in statement
            assert "rejected_records" not in statement
        for scan in large_table_scans(statement, parameters):
            read = scan["Actual Rows"] * scan["Actual Loops"] + scan.get(
                "Rows Removed by Filter", 0
            )
            assert read <= bound, (statement, scan)
