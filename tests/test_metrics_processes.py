"""Several processes behind one metrics endpoint share a directory, or the endpoint says it cannot.

Without PROMETHEUS_MULTIPROC_DIR each process counts apart: one gunicorn worker of two would
answer a scrape with half the requests, and a prefork Celery worker's main process, which runs
no task, with no run at all. Real gunicorn and real Celery workers, started as an operator would.
"""

import sys
from pathlib import Path

import pytest
import requests

from tests.processes import ManagedProcess, answers, free_port, worker_argv, worker_ready

GUNICORN = str(Path(sys.executable).parent / "gunicorn")


def split_refusal(response: requests.Response) -> None:
    """Check ``response`` is the 503 that says why the metrics are not served."""
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == 503
    assert "PROMETHEUS_MULTIPROC_DIR" in body["message"]
    assert "own counts" in body["message"]


@pytest.fixture
def plain_env(tmp_path):
    """Return an environment without PROMETHEUS_MULTIPROC_DIR, on a scratch SQLite file."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'etl.db'}",
        "LOG_FORMAT": "json",
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "shared", "status"),
    [(2, False, 503), (3, False, 503), (2, True, 200), (1, False, 200)],
)
def test_gunicorn_workers_that_share_no_directory_refuse_to_serve_split_metrics(
    tmp_path, plain_env, workers, shared, status
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**plain_env, **({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m")} if shared else {})}
    argv = [GUNICORN, "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "wsgi:app"]
    server = ManagedProcess(
        argv, env, tmp_path / "gunicorn.log", lambda log: answers(f"{url}/openapi.json")
    )
    server.start()
    try:
        answers_ = [requests.get(f"{url}/metrics", timeout=5) for _ in range(4)]
    finally:
        server.stop()

    assert {response.status_code for response in answers_} == {status}
    warnings = [line for line in server.log().splitlines() if "metrics.not_shared" in line]
    if status == 503:
        for response in answers_:
            split_refusal(response)
        assert warnings and all('"level": "warning"' in line for line in warnings)
        assert len(warnings) <= workers  # once per process, not once per request
    else:
        assert "kasparro_http_requests_total" in answers_[0].text
        assert warnings == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pool", "shared", "status"),
    [("prefork", False, 503), ("solo", False, 200), ("prefork", True, 200)],
)
def test_a_celery_worker_whose_pool_shares_no_directory_refuses_to_serve_split_metrics(
    tmp_path, broker_env, pool, shared, status
):
    port = free_port()
    env = {key: value for key, value in broker_env.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    if shared:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "m")
    env["LOG_FORMAT"] = "json"
    argv = [*worker_argv(), "--pool", pool, "--metrics-port", str(port)]
    worker = ManagedProcess(argv, env, tmp_path / "worker.log", worker_ready)
    worker.start()
    try:
        response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        worker.stop()

    assert response.status_code == status
    warnings = [line for line in worker.log().splitlines() if "metrics.not_shared" in line]
    if status == 503:
        split_refusal(response)
        assert len(warnings) == 1  # at start
    else:
        assert response.headers["Content-Type"].startswith("text/plain")
        assert warnings == []
