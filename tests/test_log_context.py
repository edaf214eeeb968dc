"""Every log line says what it belongs to: a request's its ``request_id``, a run's its ``run_id``
and ``source`` and, under Celery, its ``task_id``.

Each test captures what a process wrote to stderr, parses every line as JSON and checks each one:
a request through the test client, ``flask etl run``, a run started over HTTP and run in the API
process (eager mode), and a run in a real Celery worker. Errors are among them (a failing view,
an unreachable upstream, an injected failure), and so are library lines (urllib3's, Celery's),
which reach the same processors through the standard library's logging.
"""

import json
import re
from collections.abc import Callable

import pytest
import structlog

from kasparro import create_app
from kasparro.extensions import db
from tests.conftest import ADMIN_TOKEN, queued_on_redis
from tests.processes import eventually
from tests.test_celery_runs import wait_for_run

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
UNREACHABLE_API = "http://127.0.0.1:9/api/v3/coins/markets"
RUN_KEYS = ("run_id", "source")


def parse(text: str) -> list[dict]:
    """Return every line of ``text`` as the JSON object it must be."""
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines:
        assert line.startswith("{"), f"not a JSON line: {line}"
    return [json.loads(line) for line in lines]


def segments(lines: list[dict], starts: Callable[[dict], bool]) -> list[list[dict]]:
    """Split ``lines`` where ``starts`` holds: each part runs from one such line to the next."""
    parts: list[list[dict]] = []
    for line in lines:
        if starts(line):
            parts.append([])
        if parts:
            parts[-1].append(line)
    return parts


def unbound(lines: list[dict], expected: dict) -> list[tuple[str, dict]]:
    """Return each line that lacks some of ``expected``, as (event, what it lacks)."""
    lacking = [
        (line["event"], {key: value for key, value in expected.items() if line.get(key) != value})
        for line in lines
    ]
    return [(event, lacks) for event, lacks in lacking if lacks]


def assert_nothing_left_bound() -> None:
    """Check that a line logged now carries no request's and no run's context."""
    bound = structlog.contextvars.get_contextvars()
    assert not {"request_id", "run_id", "source", "task_id"} & set(bound), bound


def run_started(line: dict) -> bool:
    return line["event"] == "etl.run.started"


@pytest.fixture
def debug_settings(settings):
    """Return the test settings, logging everything, libraries' debug lines included."""
    settings.update(LOG_LEVEL="DEBUG", ETL_ADMIN_TOKEN=ADMIN_TOKEN)
    return settings


@pytest.fixture
def debug_app(debug_settings):
    """Yield an app logging at DEBUG, with a view that fails, inside an application context."""
    application = create_app(dict(debug_settings))

    def explode():
        raise RuntimeError("the view failed")

    application.add_url_rule("/explode", view_func=explode)
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", "/data?page_size=2", 200),
        ("GET", "/data?page=0", 422),
        ("GET", "/runs/999", 404),
        ("GET", "/explode", 500),
        ("POST", "/etl/run", 202),  # runs csv1, csv2 and coingecko_api here, in eager mode
    ],
)
def test_every_line_written_while_serving_a_request_carries_its_request_id(
    debug_app, capsys, method, url, status
):
    client = debug_app.test_client()
    capsys.readouterr()

    response = client.open(url, method=method, headers=AUTH)

    assert response.status_code == status, response.get_data(as_text=True)
    request_id = response.headers["X-Request-ID"]
    lines = parse(capsys.readouterr().err)
    assert [line for line in lines if line.get("request_id") != request_id] == []
    assert lines[-1]["event"] == "http.request"
    events = {line["event"] for line in lines}
    if status == 500:
        assert "http.unhandled_error" in events
    if method == "POST":  # the pipeline's lines and the libraries' during the runs
        loggers = {line["logger"] for line in lines}
        assert {"kasparro.etl.pipeline", "urllib3.connectionpool", "celery.app.trace"} <= loggers
    assert_nothing_left_bound()


def test_every_line_of_a_cli_run_carries_its_run_id_and_source(debug_app):
    debug_app.config["API_SOURCE_URL"] = UNREACHABLE_API

    result = debug_app.test_cli_runner().invoke(
        args=["etl", "run", "--source", "coingecko_api", "--source", "csv1"]
    )

    assert result.exit_code == 1  # coingecko_api failed: its error lines are run lines too
    lines = parse(result.stderr.split("Error: failed:")[0])
    runs = segments(lines, run_started)
    assert [run[0]["source"] for run in runs] == ["coingecko_api", "csv1"]
    for run in runs:
        expected = {key: run[0][key] for key in RUN_KEYS}
        assert unbound(run, expected) == []
    failed, loaded = runs
    assert {"urllib3.connectionpool", "kasparro.etl.http_client"} <= {
        line["logger"] for line in failed
    }
    assert failed[-1]["status"] == "FAILED"
    assert loaded[-1]["status"] == "SUCCESS"
    # Nothing before the first run carries a run's context, and nothing stays bound after.
    assert [line for line in lines[: lines.index(runs[0][0])] if "run_id" in line] == []
    assert_nothing_left_bound()


def test_every_line_of_a_run_started_over_http_carries_the_run_and_the_task(app, client, capsys):
    """At INFO: at DEBUG, Celery describes the chain it builds, before the run's first task."""
    app.config.update(ETL_ADMIN_TOKEN=ADMIN_TOKEN, ETL_INJECT_FAILURE="csv2:before_load")
    capsys.readouterr()

    response = client.post(
        "/etl/run", json={"sources": ["csv1", "csv2", "coingecko_api"]}, headers=AUTH
    )

    assert response.status_code == 202, response.get_json()
    assert response.get_json()["mode"] == "eager"
    lines = parse(capsys.readouterr().err)
    access = lines.pop()
    assert access["event"] == "http.request"
    runs = segments(lines, run_started)
    queued = response.get_json()["runs"]
    assert [(run[0]["run_id"], run[0]["source"]) for run in runs] == [
        (run["run_id"], run["source"]) for run in queued
    ]
    request_id = response.headers["X-Request-ID"]
    for run, started in zip(runs, queued, strict=True):
        expected = {"request_id": request_id, **{key: run[0][key] for key in RUN_KEYS}}
        assert unbound(run, expected) == []
        # Each task's lines carry that task's id, from the chain's first task (the run's) on.
        assert run[1]["event"] == "etl.task.started"
        assert run[1]["task_id"] == started["task_id"]
        assert [line["event"] for line in run if not line.get("task_id")] == []
        assert "celery.app.trace" in {line["logger"] for line in run}
    finished = [line for line in runs[1] if line["event"] == "etl.run.finished"]
    assert [line["status"] for line in finished] == ["FAILED"]
    # Celery's account of the failure, with its traceback, is the failed run's last line.
    assert (runs[1][-1]["logger"], runs[1][-1]["level"]) == ("celery.app.trace", "error")
    assert "InjectedFailure" in runs[1][-1]["exception"]
    assert_nothing_left_bound()


TASK_RECEIVED = re.compile(r"^Task (?P<name>[\w.]+)\[(?P<task_id>[\w-]+)\] received$")


@pytest.fixture
def worker_app(broker_env, database_url):
    """Yield an app on ``database_url`` that queues its runs for a real worker on Redis."""
    application = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "ETL_ADMIN_TOKEN": ADMIN_TOKEN,
            "CELERY": queued_on_redis(broker_env),
        }
    )
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


@pytest.mark.slow
def test_every_line_of_a_run_in_a_worker_carries_the_run_and_the_task(
    worker_app, database_url, start_worker
):
    """Each task's lines run from its start to Celery's line on how it ended, after the main
    process's line saying it received it."""
    worker = start_worker(DATABASE_URL=database_url, ETL_INJECT_FAILURE="csv2:before_load")
    client = worker_app.test_client()

    response = client.post(
        "/etl/run", json={"sources": ["csv1", "csv2", "coingecko_api"]}, headers=AUTH
    )

    assert response.status_code == 202, response.get_json()
    queued = response.get_json()["runs"]
    statuses = [wait_for_run(run["run_id"]).status for run in queued]
    assert statuses == ["SUCCESS", "FAILED", "SUCCESS"]
    # csv2's chain stops at its failing first task: five tasks, each ending with Celery's line.
    eventually(lambda: worker.log().count('"logger": "celery.app.trace"') == 5, timeout=30)
    # The banner before the worker is ready is printed, not logged; every line after is JSON.
    lines = parse(worker.log().split(" ready.", 1)[1].split("\n", 1)[1])
    tasks = segments(lines, lambda line: TASK_RECEIVED.match(line["event"]) is not None)
    assert len(tasks) == 5
    source_of = {run["run_id"]: run["source"] for run in queued}
    for received, *task_lines in tasks:
        task_id = TASK_RECEIVED.match(received["event"])["task_id"]
        # The worker's main process received the task: that line belongs to no task.
        assert not {"task_id", "run_id", "source"} & set(received)
        run_id = task_lines[0]["run_id"]
        expected = {"task_id": task_id, "run_id": run_id, "source": source_of[run_id]}
        assert task_lines[0]["event"] == "etl.task.started"
        assert unbound(task_lines, expected) == []
        # Celery's own line on how the task ended is the task's last, and carries them too.
        assert task_lines[-1]["logger"] == "celery.app.trace"
        assert f"[{task_id}]" in task_lines[-1]["event"]
    failed = [task[-1] for task in tasks if task[-1]["level"] == "error"]
    assert [line["source"] for line in failed] == ["csv2"]
    assert "InjectedFailure" in failed[0]["event"]
