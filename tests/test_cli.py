"""``flask etl run`` and ``flask etl status``, in-process and as the real command.

The real command is also run on a pseudo-terminal and in pipes: on a terminal its logs are
readable and each source's read shows its progress; in pipes the logs are JSON and nothing else
is shown; LOG_FORMAT overrides the choice of format either way.
"""

import json
import os
import pty
import re
import select
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from kasparro.db_types import utcnow
from kasparro.extensions import db
from kasparro.models import RawCsvRecord
from tests.conftest import store_without_loading

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


# What a terminal shows: log lines, each source's progress frames and the summary lines.
CONSOLE_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[(debug|info|warning|error|critical) *\] ")
PROGRESS_FRAME = re.compile(
    r"^(?P<source>\w+) +(\[[# -]+\] +(?P<percent>\d+)% +)?(?P<rows>[\d,]+) rows +[\d,]+ rows/s"
    r"( +(?P<left>--:--:--|\d\d:\d\d:\d\d) left)?$"
)
SUMMARY_LINE = re.compile(r"^\w+ +run \d+ +[A-Z]+ ")
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RUN_ALL = ["etl", "run", "--source", "csv1", "--source", "csv2", "--source", "coingecko_api"]


@pytest.fixture
def command_env(settings):
    """Return the environment of a real ``flask`` command on the test's database and inputs.

    Batches of four rows: each CSV is read in several, so its progress moves more than once.
    """
    env = {key: value for key, value in os.environ.items() if key != "LOG_FORMAT"}
    env.update({key: str(value) for key, value in settings.items()})
    env.update(DATABASE_URL=settings["SQLALCHEMY_DATABASE_URI"], ETL_BATCH_SIZE="4", LOG_FORMAT="")
    return env


def on_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run ``flask *args`` with a pseudo-terminal as stdout and stderr; return what it showed."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*FLASK, *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=terminal,
        stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    shown = bytearray()
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 120)
            assert ready, f"no output for two minutes:\n{shown.decode(errors='replace')}"
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the command has exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        process.wait(timeout=60)
    assert process.returncode == 0, shown.decode(errors="replace")
    return shown.decode()


def in_pipes(args: list[str], env: dict[str, str]) -> tuple[str, str]:
    """Run ``flask *args`` with pipes as stdout and stderr; return (stdout, stderr)."""
    result = subprocess.run(
        [*FLASK, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, result.stderr


def screen_lines(shown: str) -> list[str]:
    """Split a terminal's output into what each redraw left: lines, and frames within a line."""
    text = ESCAPE.sub("", shown.replace("\r\n", "\n"))
    return [frame.rstrip() for line in text.split("\n") for frame in line.split("\r") if frame]


def log_format_of(lines: list[str]) -> set[str]:
    """Return the formats ``lines`` are written in: ``json``, ``console`` or ``other``."""
    formats = set()
    for line in lines:
        if line.startswith("{"):
            json.loads(line)
            formats.add("json")
        else:
            formats.add("console" if CONSOLE_LINE.match(line) else "other")
    return formats


def progress_frames(lines: list[str]) -> dict[str, list[re.Match]]:
    """Return each source's progress frames, in the order they were drawn."""
    frames: dict[str, list[re.Match]] = {}
    for line in lines:
        if frame := PROGRESS_FRAME.match(line):
            frames.setdefault(frame["source"], []).append(frame)
    return frames


def test_on_a_terminal_logs_are_readable_and_each_source_shows_its_progress(command_env):
    lines = screen_lines(on_terminal(RUN_ALL, command_env))

    frames = progress_frames(lines)
    logged = [line for line in lines if not PROGRESS_FRAME.match(line)]
    logged = [line for line in logged if not SUMMARY_LINE.match(line)]
    assert log_format_of(logged) == {"console"}, "\n".join(logged)
    assert set(frames) == {"csv1", "csv2", "coingecko_api"}
    # A file's share done, rows read and the pace, batch by batch; the time left from the
    # second batch on, once there is a pace to go by; the last frame has no time left.
    csv1 = frames["csv1"]
    assert [frame["rows"] for frame in csv1] == ["4", "8", "12", "14", "14"]
    assert csv1[0]["left"] == "--:--:--"
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", frame["left"]) for frame in csv1[1:-1])
    assert (csv1[-1]["percent"], csv1[-1]["left"]) == ("100", None)
    csv2 = frames["csv2"]
    percents = [int(frame["percent"]) for frame in csv2[:-1]]
    assert len(percents) == 4 and percents == sorted(set(percents))  # 16 rows: four batches
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", frame["left"]) for frame in csv2[1:-1])
    # Its blank last line is read too: the bar ends full.
    assert (csv2[-1]["percent"], csv2[-1]["left"]) == ("100", None)
    # An API's size is not known: rows and pace only.
    assert {frame["percent"] for frame in frames["coingecko_api"]} == {None}
    assert frames["coingecko_api"][-1]["rows"] == "5"


def test_in_pipes_logs_are_json_and_no_progress_is_shown(command_env):
    stdout, stderr = in_pipes(RUN_ALL, command_env)

    assert log_format_of(stderr.splitlines()) == {"json"}
    assert all(SUMMARY_LINE.match(line) for line in stdout.splitlines()), stdout
    assert len(stdout.splitlines()) == 3


def test_log_format_json_gives_json_on_a_terminal(command_env):
    command_env["LOG_FORMAT"] = "json"

    lines = screen_lines(on_terminal(RUN_ALL, command_env))

    logged = [line for line in lines if not PROGRESS_FRAME.match(line)]
    logged = [line for line in logged if not SUMMARY_LINE.match(line)]
    assert log_format_of(logged) == {"json"}, "\n".join(logged)
    assert set(progress_frames(lines)) == {"csv1", "csv2", "coingecko_api"}


def test_log_format_console_gives_console_lines_in_a_pipe(command_env):
    command_env["LOG_FORMAT"] = "console"

    stdout, stderr = in_pipes(RUN_ALL, command_env)

    assert log_format_of(stderr.splitlines()) == {"console"}, stderr
    assert all(SUMMARY_LINE.match(line) for line in stdout.splitlines()), stdout


def test_an_unknown_log_format_stops_the_start_naming_the_setting(command_env):
    command_env["LOG_FORMAT"] = "xml"

    result = subprocess.run(
        [*FLASK, *RUN_ALL], cwd=ROOT, env=command_env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert result.stderr.splitlines()[-1].endswith(
        "LOG_FORMAT must be empty or `json` or `console`, got 'xml'"
    )
    assert result.stdout == ""


@pytest.mark.parametrize(("source", "loaded"), [("csv1", 14), ("csv2", 12)])
def test_load_left_over_loads_what_an_earlier_version_stored_once(app, runner, source, loaded):
    store_without_loading(source, app.config)

    result = runner.invoke(args=["etl", "load-left-over"])
    again = runner.invoke(args=["etl", "load-left-over"])

    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert f"inserted={loaded} " in lines[source]
    assert lines["coingecko_api"].endswith("nothing left over")
    assert again.exit_code == 0, again.output
    assert all(line.endswith("nothing left over") for line in again.stdout.splitlines())
