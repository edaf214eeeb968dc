"""A fourth source costs one module: tests/fourth_source.py, run end to end on both engines.

It runs in a process of its own, which imports that module before the app is built, as the
sources package imports the built-in ones; this test session's own registry stays as it is.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kasparro.etl.sources import SOURCES
from tests.conftest import ADMIN_TOKEN, scratch_database

ROOT = Path(__file__).resolve().parent.parent
FEED = (
    "ticker,project,coins,as_of\n"
    "BTC,Bitcoin,19800000,2025-12-27T10:00:00Z\n"
    "ETH,,120.5M,2025-12-27T10:00:00Z\n"
    "ZZZ,Nothing,N/A,2025-12-27T10:00:00Z\n"
)
# Everything a user sees of a source, asked of an app that knows the fourth one.
SCRIPT = """
import json
import tests.fourth_source
from kasparro import create_app
from kasparro.config import settings_table
from kasparro.extensions import db

app = create_app()
with app.app_context():
    db.create_all()  # its raw table: a source of the product's own comes with a migration
client, runner = app.test_client(), app.test_cli_runner()
run = runner.invoke(args=["etl", "run", "--source", "supply"])
again = client.post(
    "/etl/run", json={"sources": ["supply"]}, headers={"Authorization": "Bearer " + TOKEN}
)
seen = {
    "run": [run.exit_code, run.output],
    "again": [again.status_code, again.get_json()],
    "data": client.get("/data?source=supply&metric=circulating_supply&page_size=10").get_json(),
    "runs": client.get("/runs?source=supply").get_json(),
    "stats": client.get("/stats").get_json(),
    "health": client.get("/health").get_json(),
    "status": runner.invoke(args=["etl", "status"]).output,
    "retention": runner.invoke(args=["etl", "retention"]).output,
    "beat": app.extensions["celery"].conf.beat_schedule.get("etl-supply"),
    "settings": {
        key: app.config[key]
        for key in (
            "SUPPLY_CSV_PATH", "SUPPLY_UNIT", "SCHEDULE_SUPPLY_SECONDS", "RETENTION_RAW_DAYS_SUPPLY"
        )
    },
    "documented": "`SUPPLY_CSV_ENCODING`" in settings_table(),
    "metric_filter": next(
        parameter["schema"]["enum"]
        for parameter in client.get("/openapi.json").get_json()["paths"]["/data"]["get"][
            "parameters"
        ]
        if parameter["name"] == "metric"
    ),
}
print(json.dumps(seen, default=str))
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database(request, tmp_path, sqlite_template):
    """Yield a migrated database that no other test uses, on each engine in turn."""
    if request.param == "postgresql":
        with scratch_database("kasparro_fourth") as url:
            yield url
        return
    path = tmp_path / "etl.db"
    shutil.copy(sqlite_template, path)
    yield f"sqlite:///{path}"


def test_a_fourth_source_defined_in_one_module_runs_end_to_end(fresh_database, tmp_path):
    feed = tmp_path / "supply.csv"
    feed.write_text(FEED)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CELERY_", "SUPPLY_", "REDIS_"))
    }
    env |= {
        "DATABASE_URL": fresh_database,
        "SUPPLY_CSV_PATH": str(feed),
        "SUPPLY_UNIT": "tokens",
        "ETL_ADMIN_TOKEN": ADMIN_TOKEN,
        "LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-c", f"TOKEN = {ADMIN_TOKEN!r}\n{SCRIPT}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])

    exit_code, output = seen["run"]
    assert exit_code == 0, output
    assert "supply" in output and "PARTIAL" in output and "rejected=1" in output
    values = {
        row["symbol"]: (row["value"], row["currency"], row["asset_id"])
        for row in seen["data"]["data"]
    }
    assert values == {
        "BTC": ("19800000", "tokens", "bitcoin"),
        "ETH": ("120500000", "tokens", "ethereum"),
    }
    assert seen["again"][0] == 202  # unchanged input: the second run reads nothing new
    assert [run["status"] for run in seen["runs"]["runs"]] == ["SUCCESS", "PARTIAL"]
    assert [s["source"] for s in seen["stats"]["stats"]][-1] == "supply"
    assert "supply" in seen["health"]["sources"]
    assert "supply" in seen["status"] and "supply" in seen["retention"]
    assert seen["beat"] == {"task": "etl.scheduled_run", "schedule": 900.0, "args": ["supply"]}
    assert seen["settings"] == {
        "SUPPLY_CSV_PATH": str(feed),
        "SUPPLY_UNIT": "tokens",
        "SCHEDULE_SUPPLY_SECONDS": 900,
        "RETENTION_RAW_DAYS_SUPPLY": 30,
    }
    assert seen["documented"]
    assert "circulating_supply" in seen["metric_filter"]


def test_this_session_knows_only_the_built_in_sources():
    assert list(SOURCES) == ["coingecko_api", "csv1", "csv2"]
