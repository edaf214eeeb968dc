"""``flask etl run`` and ``flask etl status``, in-process and as the real command."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from kasparro.db_types import utcnow
from kasparro.extensions import db
from kasparro.models import RawCsvRecord

ROOT = Path(__file__).resolve().parent.parent
FLASK = [sys.executable, "-m", "flask", "--app", "wsgi"]


def test_run_prints_a_summary_per_source(runner):
    result = runner.invoke(args=["etl", "run", "--source", "csv1", "--source", "csv2"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("csv1           run 1     SUCCESS  read=14 inserted=14")
    assert lines[1].startswith("csv2           run 2     PARTIAL  read=16 inserted=12")
    assert "rejected=4" in lines[1]


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        ("dogecoin,Dogecoin,0.12", "the last line has no line ending yet"),
        ('dogecoin,"Doge\n', "a quoted field is still open at the end of the file"),
    ],
)
def test_run_says_which_line_is_still_waiting(runner, csv_paths, tail, reason):
    with open(csv_paths["CSV1_PATH"], "a", encoding="utf-8") as feed:
        feed.write(tail)

    result = runner.invoke(args=["etl", "run", "--source", "csv1"])

    assert result.exit_code == 0, result.output
    assert f"waiting: line 16: {reason}" in result.stdout


def test_run_exits_non_zero_when_a_source_fails(app, runner):
    app.config["API_SOURCE_URL"] = "http://127.0.0.1:9/api/v3/coins/markets"

    result = runner.invoke(args=["etl", "run"])

    assert result.exit_code == 1
    assert "coingecko_api  run 1     FAILED" in result.stdout
    assert "error: SourceError: 127.0.0.1:9 page 1: gave up after 5 attempts" in result.stdout
    assert "csv1           run 2     SUCCESS" in result.stdout
    assert "Error: failed: coingecko_api" in result.stderr


def test_run_rejects_an_unknown_source(runner):
    result = runner.invoke(args=["etl", "run", "--source", "nope"])

    assert result.exit_code == 2
    assert "Invalid value for '--source'" in result.output


def test_status_shows_last_run_and_checkpoint(runner):
    runner.invoke(args=["etl", "run", "--source", "csv1"])

    result = runner.invoke(args=["etl", "status"])

    assert result.exit_code == 0
    assert "coingecko_api  never run" in result.stdout
    assert "csv1           run 1 SUCCESS" in result.stdout
    assert '"offset": 646' in result.stdout


def test_the_real_commands_migrate_and_load_an_embedded_sqlite_database(tmp_path, coingecko):
    database = tmp_path / "etl.db"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "API_SOURCE_URL": coingecko.url,
        "LOG_LEVEL": "WARNING",
    }

    def flask(*args):
        return subprocess.run(
            [*FLASK, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )

    assert flask("db", "upgrade").returncode == 0
    result = flask("etl", "run")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "coingecko_api  run 1     SUCCESS  read=5 inserted=15" in result.stdout
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT COUNT(*) FROM unified_records")) == 15 + 14 + 12
    engine.dispose()


@pytest.mark.parametrize(
    ("age_days", "line", "deleted"),
    [
        (0, "csv1           raw rows kept: RETENTION_RAW_DAYS_CSV1 is 0", 0),
        (7, "csv1           raw rows deleted: 13", 13),
    ],
)
def test_retention_deletes_covered_raw_rows_past_their_age(app, runner, age_days, line, deleted):
    app.config["RETENTION_RAW_DAYS_CSV1"] = age_days
    assert runner.invoke(args=["etl", "run", "--source", "csv1"]).exit_code == 0
    db.session.execute(sa.update(RawCsvRecord).values(received_at=utcnow() - timedelta(days=8)))
    db.session.commit()

    result = runner.invoke(args=["etl", "retention"])

    assert result.exit_code == 0, result.output
    assert line in result.stdout
    kept = db.session.scalar(sa.select(sa.func.count()).select_from(RawCsvRecord))
    assert kept == 14 - deleted  # the newest row stays, whatever its age
