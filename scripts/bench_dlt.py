"""Baseline 2 of `make bench`: one CSV feed loaded by dlt, merging on Kasparro's unified key.

dlt is the tool a user would pick instead of Kasparro. Run as a process of its own, so that its
wall time and peak RSS are its alone. The rows are plain dicts from the csv module, named as in
``unified_records``; dlt parses the value as a decimal and the time as a timestamp (column hints),
and merges on ``(source, external_id, metric, timestamp)`` into PostgreSQL: its default
``delete-insert`` merge, and its ``csv`` loader file format (COPY), the faster of the two it has
for PostgreSQL (about 15 % on 100,000 rows here).
dlt's pipeline state goes to ``WORKDIR``, which should be a temporary directory.

    .venv/bin/python scripts/bench_dlt.py {csv1,csv2} FILE POSTGRES_URL WORKDIR
"""

import argparse
import csv
import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kasparro.etl.sources.csv_markets import split_full_name  # noqa: E402

KEY = ("source", "external_id", "metric", "timestamp")
COLUMNS = {"value": {"data_type": "decimal"}, "timestamp": {"data_type": "timestamp"}}


def csv1_rows(path: Path) -> Iterator[dict]:
    """Yield csv1's rows (``id,name,value,timestamp``) as observations."""
    with open(path, newline="", encoding="utf-8") as feed:
        for row in csv.DictReader(feed):
            yield {
                "source": "csv1",
                "external_id": row["id"],
                "name": row["name"],
                "metric": "price_usd",
                "value": row["value"],
                "timestamp": row["timestamp"],
            }


def csv2_rows(path: Path) -> Iterator[dict]:
    """Yield csv2's rows (``record_id,full_name,score,created_at``) as observations."""
    with open(path, newline="", encoding="utf-8") as feed:
        for row in csv.DictReader(feed):
            name, symbol = split_full_name(row["full_name"])
            yield {
                "source": "csv2",
                "external_id": row["record_id"],
                "name": name,
                "symbol": symbol,
                "metric": "market_cap_usd",
                "value": row["score"],
                "timestamp": row["created_at"],
            }


def credentials(url: str):
    """Return dlt's credentials for ``url``; a URL without a password (trust auth) gets ""."""
    from dlt.destinations.impl.postgres.configuration import PostgresCredentials

    given = PostgresCredentials()
    given.parse_native_representation(url)
    given.password = given.password or ""  # dlt requires one, even where the server asks none
    return given


def main() -> None:
    """Load one feed with dlt and print dlt's load summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("feed", choices=("csv1", "csv2"))
    parser.add_argument("path", type=Path)
    parser.add_argument("url", help="postgresql://user@host:port/database")
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args()
    # Set before dlt is imported: no telemetry leaves the machine, no state outside WORKDIR.
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["DLT_DATA_DIR"] = str(args.workdir)
    os.chdir(args.workdir)
    import dlt

    rows = {"csv1": csv1_rows, "csv2": csv2_rows}[args.feed](args.path)
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{args.feed}",
        destination=dlt.destinations.postgres(credentials=credentials(args.url)),
        dataset_name=f"dlt_{args.feed}",
        pipelines_dir=str(args.workdir / "pipelines"),
    )
    info = pipeline.run(
        rows,
        table_name="observations",
        write_disposition="merge",
        primary_key=KEY,
        columns=COLUMNS,
        loader_file_format="csv",  # loaded by COPY: faster than the default insert_values
    )
    print(info)


if __name__ == "__main__":
    main()
