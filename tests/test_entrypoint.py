"""Each role of docker/entrypoint.sh, started as the plain process a container would run."""

import os
import socket
import subprocess

import pytest
import requests
import sqlalchemy as sa

from tests.processes import (
    ENTRYPOINT,
    ROOT,
    answers,
    entrypoint_roles,
    eventually,
    free_port,
    venv_path_env,
    worker_ready,
)
from tests.test_deployment_files import interpolated_service, write_compose_project


@pytest.fixture
def roles(tmp_path):
    """Return a function that starts an entrypoint role; all are stopped after the test."""
    with entrypoint_roles(tmp_path) as start:
        yield start


@pytest.mark.slow
def test_api_role_migrates_serves_at_once_and_loads_data_in_the_background(
    roles, tmp_path, coingecko, csv_paths
):
    port = free_port()
    database = f"sqlite:///{tmp_path / 'etl.db'}"
    env = {
        "DATABASE_URL": database,
        "API_SOURCE_URL": coingecko.url,
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        **{key: str(path) for key, path in csv_paths.items()},
    }
    base = f"http://127.0.0.1:{port}"

    roles("api", {**os.environ, **env}, lambda log: answers(f"{base}/health"))

    def finished_runs():
        runs = requests.get(f"{base}/runs", timeout=2).json()["runs"]
        done = {run["source"]: run["status"] for run in runs if run["status"] != "RUNNING"}
        return done if len(done) == 3 else None

    assert eventually(finished_runs, 60) == {
        "coingecko_api": "SUCCESS",
        "csv1": "SUCCESS",
        "csv2": "PARTIAL",
    }
    assert requests.get(f"{base}/data", timeout=2).json()["pagination"]["total"] == 15 + 14 + 12


@pytest.mark.slow
def test_worker_beat_and_flower_roles_run_scheduled_runs_and_guard_the_monitor(
    roles, broker_env, broker_app, tmp_path
):
    flower_port = free_port()
    env = {
        **broker_env,
        "SCHEDULE_COINGECKO_API_SECONDS": "2",
        "SCHEDULE_CSV1_SECONDS": "2",
        "SCHEDULE_CSV2_SECONDS": "2",
        "BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule"),
        "WORKER_CONCURRENCY": "1",
        "FLOWER_BASIC_AUTH": "ops:flower-pass-1234",
        "FLOWER_PORT": str(flower_port),
    }

    roles("worker", env, worker_ready)
    roles("beat", env)
    flower_url = f"http://127.0.0.1:{flower_port}/"
    roles("flower", env, lambda log: answers(flower_url, auth=("ops", "flower-pass-1234")))

    def scheduled_sources():
        engine = sa.create_engine(env["DATABASE_URL"])
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT DISTINCT source FROM etl_runs WHERE trigger = 'schedule' "
                        "AND status IN ('SUCCESS', 'PARTIAL')")
            ).scalars().all()  # fmt: skip
        engine.dispose()
        return set(rows) == {"coingecko_api", "csv1", "csv2"}

    assert eventually(scheduled_sources, timeout=60)
    assert requests.get(flower_url, timeout=2).status_code == 401
    assert requests.get(flower_url, timeout=2, auth=("ops", "wrong")).status_code == 401


def test_flower_role_refuses_to_start_without_basic_auth(tmp_path):
    env = venv_path_env({"DATABASE_URL": f"sqlite:///{tmp_path / 'etl.db'}", "PATH": ""})
    env["PATH"] += ":/usr/bin:/bin"

    result = subprocess.run(
        [ENTRYPOINT, "flower"], env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert "set FLOWER_BASIC_AUTH=user:password" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("worker_running", "healthy"), [(True, True), (False, False)])
def test_the_compose_worker_health_check_finds_the_worker_of_its_own_container(
    roles, broker_env, tmp_path, worker_running, healthy
):
    """The check docker compose runs, as compose resolves it, against a worker the entrypoint
    started; in a container HOSTNAME is the host name the worker's ``%h`` expands to."""
    (tmp_path / "compose").mkdir()
    check = interpolated_service(write_compose_project(tmp_path / "compose"), "worker")
    kind, canonical = check["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = canonical.replace("$$", "$")  # compose prints a literal $ as $$ in its output
    env = {**broker_env, "HOSTNAME": socket.gethostname(), "WORKER_CONCURRENCY": "1"}
    worker = roles("worker", env, worker_ready)
    if not worker_running:
        worker.stop()

    result = subprocess.run(
        ["/bin/sh", "-c", command],  # what CMD-SHELL runs
        env=venv_path_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert (result.returncode == 0) is healthy, f"{command}\n{result.stdout}{result.stderr}"
    if healthy:
        assert "pong" in result.stdout
