"""Runs through Celery: a real worker on Redis, the beat schedule, one run per source, SIGKILL."""

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from kasparro import create_app
from kasparro.etl.pipeline import ingest, run_source
from kasparro.etl.runs import RunAbandoned, SourceBusy, fail_run, start_run
from kasparro.etl.sources import SOURCES
from kasparro.extensions import db
from kasparro.models import EtlRun, RawApiRecord, UnifiedRecord
from tests.coingecko_imitation import make_coins
from tests.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def wait_for_run(run_id: int, timeout: float = 60) -> EtlRun:
    """Poll the run log until the run has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.expire_all()
        run = db.session.get(EtlRun, run_id)
        if run.status != "RUNNING":
            return run
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} still RUNNING after {timeout}s")


def observation_keys() -> list[tuple]:
    return sorted(
        tuple(row)
        for row in db.session.execute(
            sa.select(
                UnifiedRecord.source,
                UnifiedRecord.external_id,
                UnifiedRecord.metric,
                UnifiedRecord.timestamp,
                UnifiedRecord.value,
            )
        )
    )


@pytest.mark.slow
def test_a_real_worker_runs_the_chain_into_postgresql(broker_app, start_worker):
    start_worker()
    client = broker_app.test_client()

    response = client.post("/etl/run", json={"sources": ["csv1", "coingecko_api"]}, headers=AUTH)

    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["mode"] == "queued"
    assert [run["source"] for run in body["runs"]] == ["csv1", "coingecko_api"]
    for queued in body["runs"]:
        run = wait_for_run(queued["run_id"])
        assert (run.status, run.trigger, run.task_id) == ("SUCCESS", "api", queued["task_id"])
        shown = client.get(f"/runs/{queued['run_id']}").get_json()
        assert (shown["status"], shown["task_id"]) == ("SUCCESS", queued["task_id"])
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UnifiedRecord)) == 14 + 15
    health = client.get("/health").get_json()
    assert health["broker_connected"] is True


@pytest.mark.slow
def test_a_worker_killed_mid_run_gets_the_task_again_and_ends_like_an_undisturbed_run(
    broker_app, start_worker, coingecko
):
    coingecko.coins = make_coins(250)
    coingecko.delay_seconds = 0.5
    worker = start_worker(API_PER_PAGE="25", API_MAX_PAGES="10", ETL_BATCH_SIZE="25")
    client = broker_app.test_client()

    queued = client.post("/etl/run", json={"sources": ["coingecko_api"]}, headers=AUTH)
    run_id = queued.get_json()["runs"][0]["run_id"]
    deadline = time.monotonic() + 30
    while len(coingecko.page_requests()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.kill()
    db.session.expire_all()
    assert db.session.get(EtlRun, run_id).status == "RUNNING"
    assert 0 < db.session.scalar(sa.select(sa.func.count()).select_from(RawApiRecord)) < 250

    coingecko.delay_seconds = 0
    start_worker(API_PER_PAGE="25", API_MAX_PAGES="10", ETL_BATCH_SIZE="25")
    run = wait_for_run(run_id, timeout=90)

    assert run.status == "SUCCESS"
    disturbed = observation_keys()
    assert len(disturbed) == len(set(disturbed)) == 750
    assert db.session.scalar(sa.select(sa.func.count()).select_from(RawApiRecord)) == 250

    # The same input, loaded undisturbed in-process into an empty database, gives the same rows.
    for table in ("unified_records", "raw_api_records", "checkpoints"):
        db.session.execute(sa.text(f"DELETE FROM {table}"))
    db.session.commit()
    broker_app.config.update(API_PER_PAGE=25, API_MAX_PAGES=10)
    run_source(db.session, "coingecko_api", broker_app.config)
    undisturbed = observation_keys()
    assert [key[:4] for key in disturbed] == [key[:4] for key in undisturbed]
    assert [key[4] for key in disturbed] == [key[4] for key in undisturbed]


def test_two_simultaneous_starts_make_one_run_and_one_skipped(app, table_counts):
    barrier = threading.Barrier(4)
    outcomes = []

    def attempt():
        with app.app_context():
            barrier.wait()
            try:
                outcomes.append(("started", start_run(db.session, "csv1", "api", app.config)))
            except SourceBusy as busy:
                outcomes.append(("skipped", busy.skipped_run_id))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(kind for kind, _ in outcomes) == ["skipped"] * 3 + ["started"]
    statuses = db.session.scalars(sa.select(EtlRun.status).order_by(EtlRun.id)).all()
    assert sorted(statuses) == ["RUNNING"] + ["SKIPPED"] * 3
    assert table_counts()["unified_records"] == 0


def test_a_second_attempt_while_running_is_409_over_http_and_skipped_on_the_cli(
    app, client, runner, table_counts
):
    app.config["ETL_ADMIN_TOKEN"] = ADMIN_TOKEN
    running = start_run(db.session, "csv1", "schedule", app.config)
    before = table_counts()

    response = client.post("/etl/run", json={"sources": ["csv1"]}, headers=AUTH)
    cli = runner.invoke(args=["etl", "run", "--source", "csv1"])

    assert response.status_code == 409
    skipped = response.get_json()["skipped"][0]
    assert skipped["running_run_id"] == running
    assert f"SKIPPED  csv1 is already running as run {running}" in cli.stdout
    after = table_counts()
    assert after == {**before, "etl_runs": before["etl_runs"] + 2}
    runs = db.session.scalars(sa.select(EtlRun).where(EtlRun.status == "SKIPPED")).all()
    assert [(r.trigger, r.error) for r in runs] == [
        ("api", f"csv1 is already running as run {running}"),
        ("cli", f"csv1 is already running as run {running}"),
    ]


def test_a_dead_runs_lock_expires(app, run_etl):
    abandoned = start_run(db.session, "csv1", "cli", app.config)
    db.session.get(EtlRun, abandoned).heartbeat_at -= timedelta(hours=1)
    db.session.commit()

    run = run_etl("csv1")["csv1"]

    assert run.status == "SUCCESS"
    closed = db.session.get(EtlRun, abandoned)
    assert closed.status == "FAILED"
    assert closed.error.startswith("abandoned: no progress since ")


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "send Authorization: Bearer <ETL_ADMIN_TOKEN>"),
        ({"Authorization": "Basic abc"}, 401, "send Authorization: Bearer <ETL_ADMIN_TOKEN>"),
        ({"Authorization": "Bearer wrong-token"}, 403, "the bearer token is not valid"),
    ],
)
def test_run_control_needs_the_admin_token(app, client, headers, status, message):
    app.config["ETL_ADMIN_TOKEN"] = ADMIN_TOKEN

    response = client.post("/etl/run", json={}, headers=headers)

    assert response.status_code == status
    assert response.get_json()["message"] == message
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EtlRun)) == 0


def test_run_control_is_disabled_without_a_token(app, client):
    app.config["ETL_ADMIN_TOKEN"] = ""

    response = client.post("/etl/run", json={}, headers=AUTH)

    assert response.status_code == 503
    assert "ETL_ADMIN_TOKEN is not set" in response.get_json()["message"]


@pytest.mark.parametrize(
    "body",
    [{"sources": ["nope"]}, {"sources": []}, {"sources": "csv1"}, {"other": 1}],
)
def test_run_control_rejects_bad_bodies(app, client, body):
    app.config["ETL_ADMIN_TOKEN"] = ADMIN_TOKEN

    response = client.post("/etl/run", json=body, headers=AUTH)

    assert response.status_code == 422
    assert response.is_json


def test_without_a_broker_runs_are_executed_eagerly(app, client):
    app.config["ETL_ADMIN_TOKEN"] = ADMIN_TOKEN

    response = client.post("/etl/run", headers=AUTH)

    assert response.status_code == 202
    body = response.get_json()
    assert body["mode"] == "eager"
    assert [run["source"] for run in body["runs"]] == list(SOURCES)
    runs = {run.source: run for run in db.session.scalars(sa.select(EtlRun))}
    assert {source: run.status for source, run in runs.items()} == {
        "coingecko_api": "SUCCESS",
        "csv1": "SUCCESS",
        "csv2": "PARTIAL",
    }
    assert {run.trigger for run in runs.values()} == {"api"}
    assert runs["csv1"].task_id == body["runs"][1]["task_id"]


def test_beat_schedules_every_source_with_intervals_from_the_environment(monkeypatch):
    monkeypatch.setenv("SCHEDULE_COINGECKO_API_SECONDS", "45")
    monkeypatch.setenv("SCHEDULE_CSV1_SECONDS", "120")
    schedule = create_app().extensions["celery"].conf.beat_schedule

    runs = [entry for entry in schedule.values() if entry["task"] == "etl.scheduled_run"]
    assert {entry["args"][0]: entry["schedule"] for entry in runs} == {
        "coingecko_api": 45.0,
        "csv1": 120.0,
        "csv2": 600.0,
    }
    assert {entry["task"] for entry in schedule.values()} == {"etl.scheduled_run", "etl.retention"}


def test_celery_settings_make_redelivery_safe():
    conf = create_app().extensions["celery"].conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.accept_content == ["json"]


def test_a_run_closed_as_abandoned_cannot_commit_another_batch(app, run_etl, csv_paths):
    abandoned = start_run(db.session, "csv1", "cli", app.config)
    db.session.get(EtlRun, abandoned).heartbeat_at -= timedelta(hours=1)
    db.session.commit()
    successor = run_etl("csv1")["csv1"]  # takes over: closes the silent run as FAILED
    with open(csv_paths["CSV1_PATH"], "a", encoding="utf-8") as feed:
        feed.write("newcoin,Newcoin,1.5,2025-12-28T00:00:00Z\n")

    with pytest.raises(RunAbandoned):
        ingest(db.session, abandoned, app.config)  # the silent run wakes up, with a batch
    fail_run(db.session, abandoned, RunAbandoned("late"))

    assert successor.status == "SUCCESS"
    closed = db.session.get(EtlRun, abandoned)
    assert closed.status == "FAILED"
    assert closed.error.startswith("abandoned: no progress since ")
    assert closed.inserted == 0
    count = db.session.scalar(sa.select(sa.func.count()).select_from(UnifiedRecord))
    assert count == successor.inserted == 14


def test_a_skipped_attempt_does_not_hide_the_failure_of_the_run_it_met(app, client, csv_paths):
    app.config["ETL_ADMIN_TOKEN"] = ADMIN_TOKEN
    running = start_run(db.session, "csv1", "schedule", app.config)
    assert client.post("/etl/run", json={"sources": ["csv1"]}, headers=AUTH).status_code == 409
    fail_run(db.session, running, RuntimeError("disk full"))

    health = client.get("/health").get_json()
    stats = client.get("/stats").get_json()["sources"]["csv1"]

    assert health["status"] == "degraded"
    assert health["sources"]["csv1"]["status"] == "FAILED"
    assert (stats["last_status"], stats["last_run"]["id"]) == ("FAILED", running)
    assert stats["run_counts"] == {"FAILED": 1, "SKIPPED": 1}
