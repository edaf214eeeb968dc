"""The run ``make run`` starts with (``flask etl run --at-start``): quick and quiet offline.

Local sources load first; a remote source that cannot connect is tried once, said so in one
line, and does not fail the command, while every other failure still does and scheduled runs
keep the full retry policy. The documented resume demonstration leaves the clone as it was.
"""

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from kasparro.etl.errors import SourceError
from kasparro.etl.http_client import (
    JsonClient,
    RetryPolicy,
    UpstreamUnreachable,
    connect_attempts,
)
from kasparro.etl.ratelimit import pacer_for
from kasparro.extensions import db
from kasparro.models import EtlRun, UnifiedRecord
from tests.coingecko_imitation import MARKETS_PATH, Fault

ROOT = Path(__file__).resolve().parent.parent
FLASK = [sys.executable, "-m", "flask", "--app", "wsgi"]
SOURCE = "coingecko_api"
# Long enough that a second try would show: the first wait is at least half of it.
SLOW_BACKOFF = {"API_BACKOFF_BASE_SECONDS": "2", "API_BACKOFF_MAX_SECONDS": "2"}


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """Yield a markets URL on a loopback port that is bound but not listening: it refuses."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}{MARKETS_PATH}"


@pytest.fixture
def start_env(settings):
    """Return the environment of a real ``flask`` command on the test's database and inputs."""
    env = {key: value for key, value in os.environ.items() if key != "LOG_FORMAT"}
    env.update({key: str(value) for key, value in settings.items()})
    env.update(DATABASE_URL=settings["SQLALCHEMY_DATABASE_URI"], LOG_FORMAT="json", **SLOW_BACKOFF)
    return env


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run ``flask *args`` in pipes and return how it ended."""
    return subprocess.run(
        [*FLASK, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def logged(stderr: str) -> list[dict]:
    """Return the JSON log lines of a command."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def finished_runs() -> dict[str, EtlRun]:
    """Return each source's run, as the command left it."""
    db.session.expire_all()
    return {run.source: run for run in db.session.scalars(sa.select(EtlRun))}


@pytest.mark.parametrize("credentials", ["", "reader:s3cret-proxy-pass@"], ids=["plain", "user"])
def test_at_start_an_unreachable_source_is_tried_once_and_said_so_in_one_line(
    app, start_env, refusing_url, credentials
):
    start_env["API_SOURCE_URL"] = refusing_url.replace("//", f"//{credentials}")
    host = refusing_url.split("/")[2]

    result = flask(start_env, "etl", "run", "--at-start")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # The local sources first, then the one line that says the remote one was not reached.
    assert [line.split()[0] for line in lines] == ["csv1", "csv2", SOURCE]
    assert lines[2] == (
        f"{SOURCE:<14} run 3     FAILED   {host} page 1: cannot connect (connection refused); "
        "tried once at start; the next run tries again"
    )
    assert "Error" not in result.stderr
    assert [line for line in logged(result.stderr) if line["level"] != "info"] == []  # no retry
    assert "s3cret" not in result.stdout + result.stderr
    runs = finished_runs()
    assert runs[SOURCE].duration_ms < 1000  # one try, no backoff (a retry waits a second)
    assert runs[SOURCE].error == (
        f"UpstreamUnreachable: {host} page 1: cannot connect (connection refused); tried once"
    )
    assert (runs["csv1"].status, runs["csv2"].status) == ("SUCCESS", "PARTIAL")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UnifiedRecord)) == 14 + 12


def test_at_start_an_upstream_that_answers_keeps_the_full_retry_policy(app, start_env, coingecko):
    # It was reached: its 503s are retried as always, and still fail the command.
    coingecko.fail_page(1, Fault(503))
    start_env.update(API_BACKOFF_BASE_SECONDS="0.01", API_BACKOFF_MAX_SECONDS="0.05")

    result = flask(start_env, "etl", "run", "--at-start")

    assert result.returncode == 1
    assert [r.status for r in coingecko.page_requests()] == [503] * 5
    assert "error: SourceError: 127.0.0.1:" in result.stdout
    assert "gave up after 5 attempts" in result.stdout
    assert result.stderr.splitlines()[-1] == f"Error: failed: {SOURCE}"


def test_at_start_a_local_source_that_fails_still_fails_the_command(
    app, start_env, refusing_url, tmp_path
):
    start_env.update(API_SOURCE_URL=refusing_url, CSV1_PATH=str(tmp_path / "missing.csv"))

    result = flask(start_env, "etl", "run", "--at-start")

    assert result.returncode == 1
    assert "error: SourceError: cannot open" in result.stdout
    assert result.stderr.splitlines()[-1] == "Error: failed: csv1"
    assert finished_runs()["csv2"].status == "PARTIAL"


def test_without_at_start_a_refused_connection_keeps_the_full_retry_policy(
    app, runner, refusing_url
):
    app.config.update(API_SOURCE_URL=refusing_url, API_MAX_ATTEMPTS=3)

    result = runner.invoke(args=["etl", "run", "--source", SOURCE])

    assert result.exit_code == 1
    assert ": gave up after 3 attempts in " in result.stdout
    assert result.stdout.rstrip().endswith(": cannot connect (ConnectionError)")


@pytest.mark.parametrize("attempts", [1, 2])
def test_connect_attempts_bound_the_tries_of_an_upstream_that_cannot_be_reached(
    refusing_url, attempts
):
    policy = RetryPolicy(max_attempts=5, base_seconds=0.01, max_backoff_seconds=0.01)
    with requests.Session() as http, connect_attempts(attempts):
        client = JsonClient(SOURCE, http, pacer_for(SOURCE, 600_000.0), policy, 5.0, 1024)
    where = "loopback page 1"

    with pytest.raises(UpstreamUnreachable) as raised:
        client.get_json(refusing_url, {}, where)

    times = "once" if attempts == 1 else "2 times"
    assert str(raised.value) == f"{where}: cannot connect (connection refused); tried {times}"


def test_connect_attempts_do_not_bound_an_upstream_that_answers(coingecko):
    coingecko.fail_next(Fault(503), Fault(503))
    policy = RetryPolicy(max_attempts=5, base_seconds=0.01, max_backoff_seconds=0.01)
    with requests.Session() as http, connect_attempts(1):
        client = JsonClient(SOURCE, http, pacer_for(SOURCE, 600_000.0), policy, 5.0, 1 << 20)

    body = client.get_json(coingecko.url, {"per_page": 250, "page": 1}, "imitation page 1")

    assert len(body) == 5
    assert [r.status for r in coingecko.page_requests()] == [503, 503, 200]


def test_outside_connect_attempts_a_refused_connection_takes_every_try(refusing_url):
    policy = RetryPolicy(max_attempts=3, base_seconds=0.01, max_backoff_seconds=0.01)
    with requests.Session() as http:
        client = JsonClient(SOURCE, http, pacer_for(SOURCE, 600_000.0), policy, 5.0, 1024)

    with pytest.raises(SourceError, match=r"gave up after 3 attempts") as raised:
        client.get_json(refusing_url, {}, "loopback page 1")

    assert not isinstance(raised.value, UpstreamUnreachable)


def docs_block(heading: str) -> str:
    """Return the first ``sh`` block under ``heading`` on the resilience page of the docs."""
    text = (ROOT / "docs" / "resilience.md").read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S)[1]


def tracked_changes() -> str:
    """Return git's account of tracked files that differ from the commit."""
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_documented_resume_demonstration_works_and_leaves_the_clone_as_it_was(tmp_path):
    before = tracked_changes()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CSV", "ETL_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'etl.db'}", LOG_LEVEL="WARNING")
    env.update(TMPDIR=str(tmp_path), CELERY_BROKER_URL="")
    loaded = (
        ".venv/bin/flask --app wsgi db upgrade && .venv/bin/flask --app wsgi etl run --source csv1"
    )
    script = f"{loaded}\n{docs_block('## Demonstrating a clean resume')}"

    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )

    summaries = [line for line in result.stdout.splitlines() if line.startswith("csv1 ")]
    assert [line.split()[3] for line in summaries] == ["SUCCESS", "FAILED", "SUCCESS", "SUCCESS"]
    assert "inserted=2 " in summaries[2], result.stdout
    assert "read=0 inserted=0 " in summaries[3], result.stdout
    assert tracked_changes() == before
