"""`make bench`: Kasparro's load path and read API, each figure next to its baseline, in one run.

On a PostgreSQL database of its own (created and migrated here, dropped at the end) and N-row
CSV files in csv1's and csv2's formats, it measures:

- the full load of each feed by ``flask etl run`` (a process of its own: wall time, rows/s, peak
  RSS), next to the bare-SQL limit on the same file (``psql \\copy`` into a staging table, then one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` into a table made ``LIKE unified_records
  INCLUDING ALL``, so with the same indexes) and next to dlt (scripts/bench_dlt.py);
- an unchanged re-run and a re-run after 1,000 appended rows, as fractions of the full load;
- the CoinGecko source at 10,000 coins from the local imitation, without pacing, and the part of
  its run spent outside waiting on the network;
- the read API over the loaded rows: wrk at 32 connections against gunicorn on the api role's
  flags (scripts/bench_api.py), next to a trivial Flask app on the same flags
  (scripts/bench_trivial.py); each answer computed in-process without the response cache; and
  the EXPLAIN plans of the queries /data runs.

It prints the tables and writes them to BENCHMARKS.md, with the machine they were measured on.

    .venv/bin/python scripts/bench.py [--rows 1000000] [--wrk-seconds 5] [--output BENCHMARKS.md]
"""

import argparse
import hashlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg
import requests
import sqlalchemy as sa
from psycopg.rows import namedtuple_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kasparro import create_app  # noqa: E402
from kasparro.etl.sources import SOURCES  # noqa: E402
from kasparro.extensions import db  # noqa: E402
from scripts.bench_api import (  # noqa: E402
    CONNECTIONS,
    WrkResult,
    gunicorn,
    production_gunicorn_flags,
    require_wrk,
    run_or_stop,
    run_wrk,
    without_bind,
)
from tests.coingecko_imitation import CoinGeckoImitation, make_coins  # noqa: E402
from tests.conftest import scratch_database  # noqa: E402

START = datetime(2024, 1, 1, tzinfo=UTC)  # the first row's time; row i is i seconds later
FEED_COINS = 1_000  # coins the CSV rows cycle through: CoinGecko's first 1,000
API_COINS = 10_000
API_PER_PAGE = 250
APPENDED = 1_000
RSS_LIMIT_MIB = 200
BIN = Path(sys.executable).parent
FLASK = [str(BIN / "flask"), "--app", "wsgi"]
BEGAN = time.monotonic()


def progress(message: str) -> None:
    """Say what the bench is doing, with the time since it began."""
    print(f"[{time.monotonic() - BEGAN:6.0f} s] {message}", file=sys.stderr, flush=True)


def moment(row: int) -> str:
    """Return row ``row``'s time, in ISO 8601 with a Z."""
    return (START + timedelta(seconds=row)).strftime("%Y-%m-%dT%H:%M:%SZ")


def csv1_line(row: int, coin: dict) -> str:
    """Return csv1's line ``row``: ``id,name,value,timestamp``, a price in USD."""
    price = coin["current_price"] + row % 1000 / 100
    return f"{coin['id']},{coin['name']},{price:.2f},{moment(row)}\n"


def csv2_line(row: int, coin: dict) -> str:
    """Return csv2's line ``row``: ``record_id,full_name,score,created_at``, a market cap."""
    full_name = f"{coin['name']} ({coin['symbol'].upper()})"
    return f"mc-{row},{full_name},{coin['market_cap'] + row},{moment(row)}\n"


@dataclass(frozen=True)
class Feed:
    """One CSV source as the bench writes it, and the bare-SQL baseline's reading of it."""

    source: str
    header: str
    line: Callable[[int, dict], str]
    # unified_records' columns from the staging table's text columns c1..c4.
    select: str

    @property
    def path_setting(self) -> str:
        """Return the setting that names the source's file."""
        return f"{self.source.upper()}_PATH"


FEEDS = (
    Feed(
        "csv1",
        "id,name,value,timestamp",
        csv1_line,
        "SELECT 'csv1', c1, lower(c1), NULL, c2, 'price_usd', c3::numeric, 'USD',"
        " c4::timestamptz, now(), 0 FROM staging",
    ),
    Feed(
        "csv2",
        "record_id,full_name,score,created_at",
        csv2_line,
        r"SELECT 'csv2', c1, NULL, upper(substring(c2 from '\(([^()]*)\)\s*$')),"
        r" substring(c2 from '^(.*?)\s*\('), 'market_cap_usd', c3::numeric, 'USD',"
        " c4::timestamptz, now(), 0 FROM staging",
    ),
)
BARE_SQL = """
CREATE TEMPORARY TABLE staging (c1 text, c2 text, c3 text, c4 text);
\\copy staging FROM '{path}' WITH (FORMAT csv, HEADER true)
INSERT INTO bench_unified (source, external_id, asset_id, symbol, name, metric, value, currency,
                           timestamp, ingested_at, run_id)
{select}
ON CONFLICT (source, external_id, metric, timestamp) DO UPDATE
SET asset_id = excluded.asset_id, symbol = excluded.symbol, name = excluded.name,
    value = excluded.value, ingested_at = excluded.ingested_at, run_id = excluded.run_id;
"""

# The writes a full load must make, in SQL alone: each record's raw row (text and key) and its
# observation, with the maintained counts, one statement each into a fresh migrated database.
# No Python, no batches, nothing read back: a bound that no loader keeping raw rows can beat.
FLOOR_SQL = """
CREATE TEMPORARY TABLE staging (c1 text, c2 text, c3 text, c4 text);
\\copy staging FROM '{path}' WITH (FORMAT csv, HEADER true)
INSERT INTO etl_runs (id, source, status, trigger, started_at, rows_read, inserted, updated,
                      unchanged, rejected, unresolved)
VALUES (1, '{source}', 'RUNNING', 'cli', now(), 0, 0, 0, 0, 0, 0);
INSERT INTO {raw_table} (run_id, record_key, payload, received_at, generation, content_hash,
                         line_no, start_offset, end_offset, raw_text)
SELECT 1, key, 'null', now(), 1, key, line_no, 0, 0, line
FROM (SELECT row_number() OVER () AS line_no, line,
             encode(sha256(convert_to(line, 'UTF8')), 'hex') AS key
      FROM (SELECT concat_ws(',', c1, c2, c3, c4) AS line FROM staging) AS lines) AS keyed
ON CONFLICT (record_key) DO NOTHING;
INSERT INTO unified_records (source, external_id, asset_id, symbol, name, metric, value,
                             currency, timestamp, ingested_at, run_id)
{select}
ON CONFLICT (source, external_id, metric, timestamp) DO UPDATE
SET asset_id = excluded.asset_id, symbol = excluded.symbol, name = excluded.name,
    value = excluded.value, run_id = excluded.run_id
WHERE (unified_records.value, unified_records.asset_id, unified_records.symbol,
       unified_records.name) IS DISTINCT FROM
      (excluded.value, excluded.asset_id, excluded.symbol, excluded.name);
"""


def write_rows(feed: Feed, path: Path, first: int, count: int, coins: list[dict]) -> None:
    """Append rows ``first`` .. ``first + count - 1`` to the feed's file; each ends its line."""
    with open(path, "a", encoding="utf-8") as out:
        if first == 0:
            out.write(feed.header + "\n")
        out.writelines(
            feed.line(row, coins[row % FEED_COINS]) for row in range(first, first + count)
        )


@dataclass(frozen=True)
class Process:
    """A finished process: its wall time, its peak resident memory and what it printed."""

    seconds: float
    peak_rss_mib: float
    output: str


def measured(argv: list[str], env: dict[str, str]) -> Process:
    """Run ``argv`` to its end and measure it; stop with its output if it fails.

    The message names the program and its first arguments only: a database URL may follow.
    """
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # the child's own rusage: its peak RSS
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:5])} ... exited {process.returncode}:\n{output}")
    return Process(seconds, usage.ru_maxrss / 1024, output)


@dataclass(frozen=True)
class EtlRun:
    """One ``flask etl run --source`` process and the run it logged."""

    process: Process
    rows_read: int
    inserted: int
    run_seconds: float


class Bench:
    """The scratch database, the files and the environment every measurement shares."""

    def __init__(self, url: str, tmp: Path, rows: int):
        self.url = url
        self.plain_url = url.replace("postgresql+psycopg://", "postgresql://")
        self.tmp = tmp
        self.rows = rows
        self.sql = psycopg.connect(self.plain_url, autocommit=True, row_factory=namedtuple_row)
        self.paths = {feed.source: tmp / f"{feed.source}.csv" for feed in FEEDS}
        self.env = {
            **os.environ,
            "DATABASE_URL": url,
            **{feed.path_setting: str(self.paths[feed.source]) for feed in FEEDS},
        }

    def scalar(self, query: str, *params):
        """Return the first column of the first row of ``query``."""
        return self.sql.execute(query, params).fetchone()[0]

    def etl(self, source: str, **extra_env: str) -> EtlRun:
        """Run ``flask etl run --source`` as a process of its own; return it and its run."""
        process = measured([*FLASK, "etl", "run", "--source", source], {**self.env, **extra_env})
        run = self.sql.execute(
            "SELECT status, rows_read, inserted, duration_ms, error FROM etl_runs"
            " WHERE source = %s ORDER BY id DESC LIMIT 1",
            (source,),
        ).fetchone()
        if run.status != "SUCCESS":
            raise SystemExit(f"{source}: run {run.status}: {run.error}\n{process.output}")
        return EtlRun(process, run.rows_read, run.inserted, run.duration_ms / 1000)

    def unified_count(self, source: str) -> int:
        """Return how many observations of ``source`` unified_records holds."""
        return self.scalar("SELECT count(*) FROM unified_records WHERE source = %s", source)


@dataclass
class Section:
    """One table of the report, and what its figures mean."""

    title: str
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    header: tuple[str, ...] = ("what", "Kasparro", "baseline", "ratio", "target", "verdict")

    def add(self, *cells: str) -> None:
        """Add a row; missing cells are empty."""
        self.rows.append(cells + ("",) * (len(self.header) - len(cells)))

    def markdown(self) -> str:
        """Return the section as Markdown: title, table, notes."""
        lines = [f"## {self.title}", "", "| " + " | ".join(self.header) + " |"]
        lines.append("|" + "---|" * len(self.header))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", "\n\n".join(self.notes)]
        return "\n".join(lines)


def verdict(met: bool) -> str:
    """Say whether a target is met."""
    return "met" if met else "**not met**"


def rate(rows: int, seconds: float) -> str:
    """Return a duration and the rows per second it gives."""
    return f"{seconds:.1f} s, {rows / seconds:,.0f} rows/s"


def bare_sql(bench: Bench, feed: Feed) -> float:
    """Load the feed's file the bare-SQL way with psql; return the wall time."""
    script = BARE_SQL.format(path=bench.paths[feed.source], select=feed.select)
    argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", bench.plain_url]
    started = time.perf_counter()
    run_or_stop(argv, input=script)
    return time.perf_counter() - started


def database_floor(bench: Bench, feed: Feed) -> float:
    """Make a full load's writes in SQL alone, in a fresh database; return the wall time."""
    raw_table = SOURCES[feed.source].raw_model.__tablename__
    with scratch_database("kasparro_floor") as url:
        script = FLOOR_SQL.format(
            path=bench.paths[feed.source],
            source=feed.source,
            raw_table=raw_table,
            select=feed.select.replace(", 0 FROM staging", ", 1 FROM staging"),
        )
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", plain]
        started = time.perf_counter()
        run_or_stop(argv, input=script)
        seconds = time.perf_counter() - started
        with psycopg.connect(plain) as check:
            stored = check.execute(
                f"SELECT (SELECT count(*) FROM {raw_table}),"
                " (SELECT sum(records) FROM unified_totals WHERE source = %s)",
                (feed.source,),
            ).fetchone()
    if stored != (bench.rows, bench.rows):
        raise SystemExit(f"{feed.source}: the floor stored {stored}, not {bench.rows} each")
    return seconds


def bench_feed(bench: Bench, feed: Feed, coins: list[dict], section: Section) -> None:
    """Measure one feed: full load and its two baselines, then the two re-runs."""
    rows, source, path = bench.rows, feed.source, bench.paths[feed.source]
    progress(f"{source}: full load of {rows:,} rows by flask etl run")
    full = bench.etl(source)
    loaded = bench.unified_count(source)
    if full.inserted != rows or loaded != rows:
        raise SystemExit(f"{source}: {full.inserted} inserted, {loaded} unified rows, not {rows}")
    progress(f"{source}: bare SQL (psql \\copy, INSERT ... ON CONFLICT)")
    bare_seconds = bare_sql(bench, feed)
    baseline_rows = bench.scalar("SELECT count(*) FROM bench_unified WHERE source = %s", source)
    if baseline_rows != rows:
        raise SystemExit(f"{source}: the bare-SQL load left {baseline_rows} rows, not {rows}")
    progress(f"{source}: database floor (the same writes in SQL alone)")
    floor_seconds = database_floor(bench, feed)
    progress(f"{source}: dlt")
    dlt_dir = bench.tmp / f"dlt-{source}"
    dlt_dir.mkdir()
    dlt = measured(
        [sys.executable, str(ROOT / "scripts" / "bench_dlt.py"), source, str(path),
         bench.plain_url, str(dlt_dir)],
        dict(os.environ),
    )  # fmt: skip
    dlt_rows = bench.scalar(f"SELECT count(*) FROM dlt_{source}.observations")
    if dlt_rows != rows:
        raise SystemExit(f"{source}: dlt loaded {dlt_rows} rows, not {rows}")
    progress(f"{source}: re-run, unchanged file")
    unchanged = bench.etl(source)
    covered = path.stat().st_size
    started = time.perf_counter()
    with open(path, "rb") as handle:  # what each run's edit check re-hashes: the covered bytes
        hashlib.file_digest(handle, "sha256")
    hash_seconds = time.perf_counter() - started
    progress(f"{source}: re-run after {APPENDED:,} rows appended")
    write_rows(feed, path, rows, APPENDED, coins)
    appended = bench.etl(source)
    if appended.inserted != APPENDED or bench.unified_count(source) != rows + APPENDED:
        raise SystemExit(f"{source}: the append run inserted {appended.inserted}")

    ours = rows / full.process.seconds
    section.add(
        f"{source} full load, {rows:,} rows: bare SQL",
        rate(rows, full.process.seconds),
        rate(rows, bare_seconds),
        f"{ours / (rows / bare_seconds):.2f}×",
        "≥ 0.5×",
        verdict(ours >= 0.5 * rows / bare_seconds),
    )
    floor = rows / floor_seconds
    section.add(
        f"{source} database floor: raw rows, observations and counts in SQL alone",
        rate(rows, floor_seconds),
        rate(rows, bare_seconds),
        f"{floor / (rows / bare_seconds):.2f}×",
        "Kasparro's ceiling",
        f"Kasparro at {ours / floor:.2f}× of it; dlt at {(rows / dlt.seconds) / floor:.2f}×",
    )
    section.add(
        f"{source} full load, {rows:,} rows: dlt",
        rate(rows, full.process.seconds),
        f"{rate(rows, dlt.seconds)}, peak RSS {dlt.peak_rss_mib:.0f} MiB",
        f"{ours / (rows / dlt.seconds):.2f}×",
        "> 1× (faster)",
        verdict(ours > rows / dlt.seconds),
    )
    section.add(
        f"{source} full load: peak RSS of `flask etl run`",
        f"{full.process.peak_rss_mib:.0f} MiB",
        "",
        "",
        f"≤ {RSS_LIMIT_MIB} MiB",
        verdict(full.process.peak_rss_mib <= RSS_LIMIT_MIB),
    )
    for label, run, limit in (
        ("re-run, unchanged file", unchanged, 0.05),
        (f"re-run, {APPENDED:,} rows appended", appended, 0.02),
    ):
        share = run.run_seconds / full.run_seconds
        section.add(
            f"{source} {label}",
            f"{run.run_seconds:.2f} s (process {run.process.seconds:.2f} s), "
            f"read {run.rows_read:,}",
            f"full load: {full.run_seconds:.1f} s (process {full.process.seconds:.1f} s)",
            f"{share:.1%}",
            f"≤ {limit:.0%}",
            verdict(share <= limit),
        )
    section.add(
        f"{source} edit check of each run: SHA-256 of the {covered / 2**20:.1f} MiB covered",
        f"{hash_seconds * 1000:.1f} ms",
        f"the append run: {appended.run_seconds:.2f} s",
        f"{hash_seconds / appended.run_seconds:.1%}",
    )


def time_requests(imitation: CoinGeckoImitation) -> list[float]:
    """Make the imitation record, per request, the seconds from its arrival to its last byte."""
    seconds: list[float] = []
    handler = imitation.server.RequestHandlerClass

    class TimedHandler(handler):
        def do_GET(self):
            started = time.perf_counter()
            super().do_GET()
            seconds.append(time.perf_counter() - started)

    imitation.server.RequestHandlerClass = TimedHandler
    return seconds


def bench_coingecko(bench: Bench, coins: list[dict], section: Section) -> None:
    """Run the CoinGecko source over the imitation's coins, without pacing."""
    pages = len(coins) // API_PER_PAGE
    progress(f"coingecko_api: {len(coins):,} coins in {pages} pages from the imitation")
    with CoinGeckoImitation(coins) as imitation:
        in_http = time_requests(imitation)
        run = bench.etl(
            "coingecko_api",
            API_SOURCE_URL=imitation.url,
            API_PER_PAGE=str(API_PER_PAGE),
            API_MAX_PAGES=str(pages),
            API_CALLS_PER_MINUTE="6000000",  # pacing must be positive: 10 µs apart is none
        )
    if run.inserted != 3 * len(coins) or len(in_http) != pages:
        raise SystemExit(f"coingecko_api: {run.inserted} inserted in {len(in_http)} requests")
    network = sum(in_http)
    outside = run.run_seconds - network
    section.add(
        f"CoinGecko, {len(coins):,} coins ({pages} pages), no pacing: the run",
        f"{run.run_seconds:.2f} s (process {run.process.seconds:.2f} s), "
        f"{run.inserted:,} observations, peak RSS {run.process.peak_rss_mib:.0f} MiB",
    )
    section.add(
        "CoinGecko: outside waiting on the network",
        f"{outside:.2f} s",
        f"in HTTP: {network:.2f} s",
        f"{outside / run.run_seconds:.0%} of the run",
    )


@dataclass(frozen=True)
class Endpoint:
    """One URL of the read API and its target."""

    label: str
    path: str
    ratio: float | None = None  # of the trivial endpoint's req/s
    p99_ms: float | None = None

    def target(self) -> str:
        """Describe the target; every URL must answer every request."""
        parts = [f"≥ {self.ratio}×"] if self.ratio else []
        parts += [f"p99 < {self.p99_ms:g} ms"] if self.p99_ms else []
        return ", ".join([*parts, "0 errors"])

    def met(self, result: WrkResult, trivial: WrkResult) -> bool:
        """Return whether ``result`` meets the target, next to the trivial endpoint's."""
        fast = not self.ratio or result.requests_per_second >= (
            self.ratio * trivial.requests_per_second
        )
        quick = not self.p99_ms or result.p99_ms < self.p99_ms
        return fast and quick and result.errors == 0


def endpoints(bench: Bench, client) -> list[Endpoint]:
    """Return the URLs to measure: /data pages and filters, /stats and /health."""
    total = bench.scalar("SELECT count(*) FROM unified_records")
    asset, symbol = bench.sql.execute(
        "SELECT asset_id, symbol FROM unified_records WHERE source = 'csv2'"
        " AND asset_id IS NOT NULL AND symbol IS NOT NULL ORDER BY id LIMIT 1"
    ).fetchone()
    middle = moment(bench.rows // 2)
    deep_page = int(total * 0.9) // 10 + 1
    deep = f"/data?page_size=10&page={deep_page}"
    cursor = client.get(deep).get_json()["pagination"]["next_cursor"]
    page = {"ratio": 0.6, "p99_ms": 25}
    filters = {
        "source": "csv1",
        "asset": asset,
        "symbol": symbol,
        "metric": "price_usd",
        "since": middle,
        "until": middle,
    }
    return [
        Endpoint("/data page 1", "/data?page_size=10", **page),
        Endpoint(f"/data by offset, 90% deep (page {deep_page:,})", deep),
        Endpoint("/data by cursor, 90% deep", f"/data?page_size=10&cursor={quote(cursor)}", **page),
        *(
            Endpoint(f"/data {name}={value}", f"/data?page_size=10&{name}={quote(value)}", **page)
            for name, value in filters.items()
        ),
        Endpoint(
            "/data source=csv1, metric=price_usd",
            "/data?page_size=10&source=csv1&metric=price_usd",
            **page,
        ),
        Endpoint("/stats", "/stats", ratio=0.5),
        Endpoint("/health", "/health", ratio=0.5),
    ]


def median_ms(client, path: str, repeat: int = 5) -> float:
    """Return the median latency in ms of GET ``path`` through ``client``."""
    latencies = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.get_data(as_text=True)}")
    return statistics.median(latencies)


def captured_statements(engine, client, path: str) -> list[tuple[str, object]]:
    """Return the queries (and their parameters) that GET ``path`` runs; EXPLAINs aside."""
    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        client.get(path)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    return statements


def query_plans(engine, client, data_endpoints: list[Endpoint]) -> str:
    """Return Markdown with EXPLAIN (ANALYZE, BUFFERS) of every query each /data URL runs."""
    parts = ["## Query plans of /data", ""]
    parts.append(
        "`EXPLAIN (ANALYZE, BUFFERS)` of each query a request runs, captured from the "
        "application as it answered (no response cache) and run again with the same parameters."
    )
    for endpoint in data_endpoints:
        statements = captured_statements(engine, client, endpoint.path)
        parts += ["", f"### {endpoint.label}: `{endpoint.path}`"]
        with engine.connect() as conn:
            for statement, parameters in statements:
                plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
                shown = [
                    statement.strip(),
                    *([f"-- parameters: {parameters}"] if parameters else []),
                ]
                parts += ["", "```", *shown, "", *(row[0] for row in plan), "```"]
    return "\n".join(parts)


def bench_reads(bench: Bench, wrk_seconds: float, api: Section, computed: Section) -> str:
    """Measure the read API computed in-process and over HTTP; return the query plans."""
    progress("VACUUM ANALYZE unified_records")
    bench.sql.execute("VACUUM ANALYZE unified_records")
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": bench.url, "LOG_LEVEL": "WARNING", "RESPONSE_CACHE_ENTRIES": 0}
    )
    client = app.test_client()
    with app.app_context():
        urls = endpoints(bench, client)
        progress("computed answers, in-process, and the query plans of /data")
        for endpoint in urls:
            computed.add(endpoint.label, f"{median_ms(client, endpoint.path):.1f} ms")
        plans = query_plans(db.engine, client, [u for u in urls if u.path.startswith("/data")])
        db.session.remove()
        db.engine.dispose()

    env = {**bench.env, "LOG_LEVEL": "WARNING"}
    flags = production_gunicorn_flags(env)
    api.notes.insert(
        0, f"gunicorn flags (from docker/entrypoint.sh): `{' '.join(without_bind(flags))}`."
    )
    trivial_log = bench.tmp / "trivial.log"
    progress(f"wrk: the trivial endpoint, {wrk_seconds:g} s")
    with gunicorn("scripts.bench_trivial:app", flags, env, ROOT, trivial_log, "/") as base:
        before = run_wrk(base + "/", wrk_seconds)
    results = []
    with gunicorn("wsgi:app", flags, env, ROOT, bench.tmp / "api.log", "/health") as base:
        for endpoint in urls:
            progress(f"wrk: {endpoint.path[:70]}, {wrk_seconds:g} s")
            answer = requests.get(base + endpoint.path, timeout=60)
            if answer.status_code != 200:
                raise SystemExit(f"{endpoint.path}: {answer.status_code} {answer.text[:500]}")
            results.append((endpoint, run_wrk(base + endpoint.path, wrk_seconds)))
    progress(f"wrk: the trivial endpoint again, {wrk_seconds:g} s")
    with gunicorn("scripts.bench_trivial:app", flags, env, ROOT, trivial_log, "/") as base:
        after = run_wrk(base + "/", wrk_seconds)
    # The machine may be busier at one moment than another: the faster ceiling is the bar.
    trivial = max(before, after, key=lambda result: result.requests_per_second)
    for label, result in (("before", before), ("after", after)):
        api.add(
            f"trivial Flask endpoint (the ceiling), {label} the others",
            describe(result),
            "",
            "",
            "0 errors",
            verdict(result.errors == 0),
        )
    for endpoint, result in results:
        api.add(
            endpoint.label,
            describe(result),
            f"{trivial.requests_per_second:,.0f} req/s, p99 {trivial.p99_ms:.1f} ms",
            f"{result.requests_per_second / trivial.requests_per_second:.2f}×",
            endpoint.target(),
            verdict(endpoint.met(result, trivial)),
        )
    return plans


def describe(result: WrkResult) -> str:
    """Return wrk's figures for one URL in one cell."""
    return (
        f"{result.requests_per_second:,.0f} req/s, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, errors {result.describe_errors()}"
    )


def machine(bench: Bench, load_before: float) -> list[str]:
    """Describe the machine, how busy it was, the database, Python and the code measured."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    memory = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.M)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    return [
        f"- CPU: {cpu[1] if cpu else platform.processor()}, {os.cpu_count()} cores",
        f"- memory: {int(memory[1]) / 2**20:.1f} GiB" if memory else "- memory: unknown",
        f"- PostgreSQL {bench.scalar('SHOW server_version')} on the same machine",
        f"- Python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"- code: {commit or 'not a git checkout'}",
        f"- load average (1 minute) when the bench began: {load_before:.1f}; when it ended: "
        f"{os.getloadavg()[0]:.1f} (other work on the machine lowers every figure)",
    ]


NOTES = {
    "ETL": [
        "Kasparro's figures are those of `flask --app wsgi etl run --source S`, a process of its "
        "own: wall time from start to exit, and its peak RSS (`ru_maxrss` from `wait4`). Rows/s "
        "is N over that wall time. The files have one row per second from 2024-01-01, cycling "
        f"through {FEED_COINS:,} coins; csv2's values are plain decimals, so that the bare-SQL "
        "baseline can cast them.",
        "Bare SQL: `psql` runs `\\copy` into a temporary staging table, then one `INSERT ... "
        "SELECT ... ON CONFLICT (source, external_id, metric, timestamp) DO UPDATE` into a table "
        "created `LIKE unified_records INCLUDING ALL` (the same indexes), with the casts in the "
        "SELECT and no asset resolution; wall time of that `psql` process.",
        "dlt: `scripts/bench_dlt.py`, a process of its own, feeds the csv module's rows as dicts "
        'to a dlt pipeline with `write_disposition="merge"` and `primary_key` on the same four '
        "columns, into the same PostgreSQL: dlt's delete-insert merge, its `csv` loader file "
        "format (COPY, the faster of its two for PostgreSQL) and its own table layout (no index "
        "on the key); wall time and peak RSS of that process.",
        "Database floor: `psql` runs, in a fresh database migrated like Kasparro's, `\\copy` "
        "into a staging table, then one `INSERT ... SELECT` of every record's raw row (its text "
        "and SHA-256 key) into the source's raw table and one `INSERT ... SELECT ... ON CONFLICT "
        "DO UPDATE` of its observation into `unified_records`, whose triggers keep the counts: "
        "the writes a full load must make, with no Python, no batches and nothing read back. "
        "No loader that keeps every raw record and exact counts can be faster; its ratio to the "
        "bare-SQL baseline bounds Kasparro's.",
        "Re-runs are fractions of the full load's own run time (`etl_runs.duration_ms`, which "
        "leaves out the process's start-up); the process's wall time is given beside. The edit "
        "check is the SHA-256 of the bytes a run has covered, which each run re-reads to see an "
        "edit above its checkpoint; it is timed here on its own.",
    ],
    "CoinGecko": [
        "The CoinGecko imitation (`tests/coingecko_imitation.py`) serves the coins on loopback; "
        "the run is `flask etl run --source coingecko_api` with `API_CALLS_PER_MINUTE` so high "
        "that calls are not paced. Time in HTTP is the sum, over the requests, of the time the "
        "imitation spent on each, from its arrival to the last byte of the answer; outside the "
        "network is the run's time (`etl_runs.duration_ms`) less that sum: parsing, writing raw "
        "rows, transforming and loading.",
    ],
    "API": [
        f"wrk with 2 threads and {CONNECTIONS} connections, for the seconds given above, on each "
        "URL in turn, against gunicorn running on the same machine. The trivial endpoint is "
        "`scripts/bench_trivial.py` on the same flags, measured before and after the others; "
        "the ratios are to the faster of the two. Request logs are off (`LOG_LEVEL=WARNING`), "
        "as for the trivial app; there is no broker, so no per-client limit. wrk repeats one URL, "
        "so after the first request each worker serves the answer it kept (the response cache); "
        "the computed figures below measure the queries themselves. Errors are socket errors "
        "(connect, read, write, timeout) and non-2xx answers. The filters' values: "
        "`asset` and `symbol` of one coin, `since` and `until` the middle of the feeds' times. "
        "`VACUUM ANALYZE unified_records` ran before, as autovacuum does after a bulk load.",
    ],
    "computed": [
        "Median of 5 requests through the Flask test client, in-process, with "
        "`RESPONSE_CACHE_ENTRIES=0`: each request runs its queries.",
    ],
}


def report(bench: Bench, args, load_before: float, sections: list[Section], plans: str) -> str:
    """Return BENCHMARKS.md: the machine, then each section, then the query plans."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# Benchmarks",
        "",
        f"Written by `make bench N={args.rows}` (`scripts/bench.py`) on {when}, in "
        f"{(time.monotonic() - BEGAN) / 60:.1f} minutes. Every figure stands next to its "
        "baseline, measured in the same run on the same machine, beside the project's target.",
        "",
        *machine(bench, load_before),
    ]
    return "\n\n".join(["\n".join(head), *(s.markdown() for s in sections), plans]) + "\n"


def run(bench: Bench, args) -> str:
    """Measure everything and return the report."""
    load_before = os.getloadavg()[0]
    coins = make_coins(API_COINS)
    for feed in FEEDS:
        progress(f"writing {args.rows:,} rows of {feed.source}")
        write_rows(feed, bench.paths[feed.source], 0, args.rows, coins)
    bench.sql.execute("CREATE TABLE bench_unified (LIKE unified_records INCLUDING ALL)")
    etl = Section(f"ETL, N = {args.rows:,}", notes=NOTES["ETL"])
    coingecko = Section("CoinGecko source", notes=NOTES["CoinGecko"])
    computed = Section(
        "Computed answers", header=("URL", "median latency"), notes=NOTES["computed"]
    )
    # CoinGecko first: its coins fill the assets table the CSV rows resolve against.
    bench_coingecko(bench, coins, coingecko)
    for feed in FEEDS:
        bench_feed(bench, feed, coins, etl)
    progress("dropping the baselines' tables")
    bench.sql.execute("DROP TABLE bench_unified")
    for feed in FEEDS:
        for schema in (f"dlt_{feed.source}", f"dlt_{feed.source}_staging"):
            bench.sql.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    total = bench.scalar("SELECT count(*) FROM unified_records")
    api = Section(
        f"Read API over {total:,} rows, wrk {args.wrk_seconds:g} s a URL", notes=[*NOTES["API"]]
    )
    plans = bench_reads(bench, args.wrk_seconds, api, computed)
    return report(bench, args, load_before, [etl, coingecko, api, computed], plans)


def main() -> None:
    """Run the benchmarks on a database of their own, print the tables, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in each CSV feed (N)")
    parser.add_argument("--wrk-seconds", type=float, default=5)
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    require_wrk()
    if shutil.which("psql") is None:
        raise SystemExit("psql is not installed: install the Debian package postgresql-client")
    with scratch_database("kasparro_bench") as url, tempfile.TemporaryDirectory() as tmp:
        bench = Bench(url, Path(tmp), args.rows)
        try:
            text = run(bench, args)
        finally:
            bench.sql.close()
    args.output.write_text(text, encoding="utf-8")
    print(text.split("\n## Query plans")[0])
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
