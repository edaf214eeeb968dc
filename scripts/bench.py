"""Benchmarks: ETL throughput and memory on a large CSV, and /data latency over a million rows.

Runs on a PostgreSQL database of its own (created here, dropped at the end). Prints a table of
figures; the numbers are measurements of this machine, not assertions.

    .venv/bin/python scripts/bench.py [--csv-rows 200000] [--table-rows 1000000]
"""

import argparse
import hashlib
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kasparro import create_app  # noqa: E402
from kasparro.etl.pipeline import run_source  # noqa: E402
from kasparro.etl.sources.csv_feed import READ_CHUNK  # noqa: E402
from kasparro.extensions import db  # noqa: E402
from kasparro.models import Checkpoint  # noqa: E402
from tests.conftest import scratch_database  # noqa: E402

START = datetime(2024, 1, 1, tzinfo=UTC)


def write_csv(path: Path, rows: int) -> None:
    """Write a csv1 feed of ``rows`` prices for 500 coins, one minute apart."""
    with open(path, "w", encoding="utf-8") as feed:
        feed.write("id,name,value,timestamp\n")
        for i in range(rows):
            moment = (START + timedelta(minutes=i // 500)).isoformat()
            feed.write(f"coin-{i % 500},Coin {i % 500},{1000 + i * 0.01:.2f},{moment}\n")


def fill_unified(url: str, rows: int) -> None:
    """Load ``rows`` observations straight into unified_records with COPY."""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as conn:
        run_id = conn.execute(
            "INSERT INTO etl_runs (source, status, trigger, started_at, rows_read, inserted,"
            " updated, unchanged, rejected, unresolved) VALUES"
            " ('csv2', 'SUCCESS', 'cli', now(), 0, 0, 0, 0, 0, 0) RETURNING id"
        ).fetchone()[0]
        columns = "source, external_id, asset_id, symbol, name, metric, value, currency, "
        columns += "timestamp, ingested_at, run_id"
        with conn.cursor().copy(f"COPY unified_records ({columns}) FROM STDIN") as copy:
            for i in range(rows):
                coin = i % 1000
                copy.write_row(
                    ("csv2", f"b-{i}", f"asset-{coin}", f"S{coin}", f"Asset {coin}",
                     ("price_usd", "market_cap_usd", "volume_24h_usd")[i % 3],
                     f"{i}.5", "USD", START + timedelta(seconds=i // 7), START, run_id)
                )  # fmt: skip
        conn.execute("ANALYZE unified_records")


def bench_edit_check(app, csv_path: Path, rows: int) -> list[tuple[str, str, str]]:
    """Time appended rows against the fingerprint check that guards the covered bytes."""
    appended = 1_000
    with open(csv_path, "a", encoding="utf-8") as feed:
        for i in range(appended):
            feed.write(f"late-{i},Late {i},{i}.25,{START.isoformat()}\n")
    started = time.perf_counter()
    run = run_source(db.session, "csv1", app.config)
    append_seconds = time.perf_counter() - started
    assert run.inserted == appended, (run.status, run.error)
    # The check re-reads and hashes every byte the checkpoint covers, as read() does.
    covered = db.session.get(Checkpoint, "csv1").cursor["offset"]
    started = time.perf_counter()
    with open(csv_path, "rb") as handle:
        digest = hashlib.sha256()
        while chunk := handle.read(min(READ_CHUNK, covered - handle.tell())):
            digest.update(chunk)
    check_seconds = time.perf_counter() - started
    # An edit above the checkpoint: the whole file is read again, one value changes.
    text = csv_path.read_text(encoding="utf-8")
    csv_path.write_text(text.replace("1000.00,", "1000.01,", 1), encoding="utf-8")
    started = time.perf_counter()
    edited = run_source(db.session, "csv1", app.config)
    edit_seconds = time.perf_counter() - started
    assert edited.updated == 1, (edited.status, edited.updated, edited.error)
    return [
        (f"ETL csv1, {appended:,} rows appended", f"{append_seconds:.2f} s", ""),
        (f"edit check: fingerprint of {covered / 2**20:.1f} MiB covered",
         f"{check_seconds * 1000:.1f} ms",
         f"{check_seconds / append_seconds:.1%} of the append run"),
        ("ETL csv1, one row edited above the checkpoint", f"{edit_seconds:.1f} s",
         f"read={edited.rows_read} updated={edited.updated} unchanged={edited.unchanged}"),
    ]  # fmt: skip


def timed(client, url: str, repeat: int = 7) -> tuple[float, dict]:
    """Return the median latency in ms of GET ``url`` and its last body."""
    latencies = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.get_json()
    return statistics.median(latencies), response.get_json()


def main() -> None:
    """Run the benchmarks on a database of their own and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv-rows", type=int, default=200_000)
    parser.add_argument("--table-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with scratch_database("kasparro_bench") as url, tempfile.TemporaryDirectory() as tmp:
        run_benchmarks(url, Path(tmp), args)


def run_benchmarks(url: str, tmp: Path, args) -> None:
    """Measure the ETL on a large CSV, then the read API over a large table."""
    csv_path = tmp / "prices.csv"
    write_csv(csv_path, args.csv_rows)
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "CSV1_PATH": str(csv_path), "LOG_LEVEL": "WARNING"}
    )
    figures = []
    with app.app_context():
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        run = run_source(db.session, "csv1", app.config)
        seconds = time.perf_counter() - started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert run.inserted == args.csv_rows, (run.status, run.error)
        figures.append((f"ETL csv1, {args.csv_rows:,} new rows", f"{seconds:.1f} s",
                        f"{args.csv_rows / seconds:,.0f} rows/s"))  # fmt: skip
        growth = (rss_after - rss_before) / 1024
        figures.append(("peak RSS growth during that run", f"{growth:.0f} MiB",
                        f"peak RSS {rss_after / 1024:.0f} MiB"))  # fmt: skip
        started = time.perf_counter()
        again = run_source(db.session, "csv1", app.config)
        figures.append(("ETL csv1 again, unchanged file", f"{time.perf_counter() - started:.2f} s",
                        f"read={again.rows_read} inserted={again.inserted}"))  # fmt: skip
        figures.extend(bench_edit_check(app, csv_path, args.csv_rows))

        started = time.perf_counter()
        fill_unified(url, args.table_rows)
        figures.append((f"COPY {args.table_rows:,} more unified rows (set-up)",
                        f"{time.perf_counter() - started:.1f} s", ""))  # fmt: skip
        # Computed answers: without the response cache, every request runs its queries.
        computing = create_app(
            {"SQLALCHEMY_DATABASE_URI": url, "LOG_LEVEL": "WARNING", "RESPONSE_CACHE_ENTRIES": 0}
        )
        client = computing.test_client()
        total = args.table_rows + args.csv_rows + 1_000
        for label, query in (
            ("/data first page", "/data?page_size=100"),
            ("/data page 1000 by offset", "/data?page_size=100&page=1000"),
            ("/data asset filter", "/data?asset=asset-7&page_size=100"),
            ("/data asset + since", "/data?asset=asset-7&since=2024-01-02T00:00:00Z"),
            ("/data metric + source", "/data?metric=price_usd&source=csv2&page_size=100"),
        ):
            latency, body = timed(client, query)
            figures.append((label, f"{latency:.1f} ms", f"total={body['pagination']['total']:,}"))
        _, body = timed(client, "/data?page_size=100&page=1000", repeat=1)
        cursor = body["pagination"]["next_cursor"]
        latency, _ = timed(client, f"/data?page_size=100&cursor={cursor}")
        figures.append(("/data by cursor after 100,000 rows", f"{latency:.1f} ms", ""))
        latency, _ = timed(client, "/stats", repeat=3)
        figures.append(("/stats", f"{latency:.1f} ms", f"over {total:,} rows"))
        kept = app.test_client()  # the response cache on: the first request computes, then kept
        for label, query in (("/data first page, kept", "/data?page_size=100"),
                             ("/stats, kept", "/stats")):  # fmt: skip
            latency, _ = timed(kept, query)
            figures.append((label, f"{latency:.1f} ms", "median of 7, the first one computed"))
        db.session.remove()
        db.engine.dispose()
    width = max(len(label) for label, _, _ in figures)
    print(f"\n{'benchmark':<{width}}  {'time':>10}  notes")
    for label, value, note in figures:
        print(f"{label:<{width}}  {value:>10}  {note}")


if __name__ == "__main__":
    main()
