"""A real Prometheus scrapes the api role (gunicorn, two workers) and the worker role after a run.

The roles start through docker/entrypoint.sh on PostgreSQL and Redis, as in a container. A run
is queued over HTTP, executed by the worker, and then PromQL answers with the database's numbers:
the rows each source has (read by the API at scrape time) and the rows the worker inserted
(counted in its pool process, served by its main process). The scrape configuration is the
compose stack's own: the API answers only the job that sends its METRICS_TOKEN.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
import yaml

from tests.conftest import ADMIN_TOKEN
from tests.processes import (
    ROOT,
    ManagedProcess,
    answers,
    entrypoint_roles,
    eventually,
    free_port,
    worker_ready,
)

SOURCES = ("csv1", "csv2", "coingecko_api")
PROMETHEUS = "/usr/bin/prometheus"
DEPLOYED_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
METRICS_TOKEN = "metrics-token-test-5a6b7c8d"


def scrape_config(api_port: int, worker_port: int, token_file: Path) -> str:
    """Return the compose stack's scrape configuration, aimed at local ports, scraping each second.

    The jobs are the repository's own, authorization included, with two changes: static targets
    instead of Docker's DNS, and the token file where this test wrote it. One job more scrapes
    the API as anyone would, without the token.
    """
    config = yaml.safe_load(DEPLOYED_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    ports = {"kasparro-api": api_port, "kasparro-worker": worker_port}
    jobs = [job for job in config["scrape_configs"] if job["job_name"] in ports]
    for job in jobs:
        del job["dns_sd_configs"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token_file)
    anyone = {"job_name": "anyone", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]}
    config["scrape_configs"] = [*jobs, anyone]
    return yaml.safe_dump(config)


@pytest.fixture
def roles(tmp_path):
    """Return a function that starts an entrypoint role; all are stopped after the test."""
    with entrypoint_roles(tmp_path) as start:
        yield start


@pytest.fixture
def prometheus(tmp_path):
    """Return a function that starts Prometheus with a scrape configuration's text."""
    started: list[ManagedProcess] = []

    def start(scrape_configuration: str) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(scrape_configuration)
        base = f"http://127.0.0.1:{free_port()}"
        argv = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={base.removeprefix('http://')}",
        ]
        process = ManagedProcess(
            argv, {}, tmp_path / "prometheus.log", lambda log: answers(f"{base}/-/ready")
        )
        started.append(process)
        process.start()
        return base

    yield start
    for process in started:
        process.stop()


def query(prometheus_url: str, promql: str) -> list[dict]:
    """Return the result vector of an instant PromQL query."""
    response = requests.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def single_value(prometheus_url: str, promql: str) -> float | None:
    """Return the value of a query that answers one series, or None while it answers none."""
    result = query(prometheus_url, promql)
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def comes_to(prometheus_url: str, promql: str, expected: float) -> None:
    """Wait until the query answers ``expected``: Prometheus scrapes every second."""
    eventually(
        lambda: single_value(prometheus_url, promql) == expected, 30, f"{promql} == {expected}"
    )


def stored_rows(database_url: str) -> dict[str, int]:
    """Return each source's rows in unified_records, counted in the database."""
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT source, count(*) FROM unified_records GROUP BY source")
        ).all()
    engine.dispose()
    return dict(rows)


def finished_runs(database_url: str) -> dict[str, tuple[str, int]] | None:
    """Return each source's run status and inserted rows once every source's run finished."""
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT source, status, inserted FROM etl_runs")).all()
    engine.dispose()
    done = {source: (status, inserted) for source, status, inserted in runs if status != "RUNNING"}
    return done if len(done) == len(SOURCES) else None


@pytest.mark.slow
def test_prometheus_scrapes_the_api_and_the_worker_and_promql_gives_the_database_numbers(
    roles, prometheus, broker_env, tmp_path
):
    """The API asks for METRICS_TOKEN, which the repository's scrape configuration sends."""
    api_port, worker_port = free_port(), free_port()
    token_file = tmp_path / "metrics_token"
    token_file.write_text(METRICS_TOKEN + "\n")  # as an editor saves it
    stale = tmp_path / "metrics" / "api" / "counter_999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an earlier start")
    env = {
        **broker_env,
        "PORT": str(api_port),
        "WEB_CONCURRENCY": "2",
        "ETL_RUN_ON_START": "0",
        "WORKER_CONCURRENCY": "1",
        "WORKER_METRICS_PORT": str(worker_port),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    api = f"http://127.0.0.1:{api_port}"
    roles("api", env, lambda log: answers(f"{api}/health"))
    roles("worker", env, worker_ready)
    prometheus_url = prometheus(scrape_config(api_port, worker_port, token_file))
    assert not stale.exists()  # the role's directory was emptied when it started

    queued = requests.post(
        f"{api}/etl/run",
        json={"sources": list(SOURCES)},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert queued.status_code == 202, queued.text
    assert queued.json()["mode"] == "queued"
    runs = eventually(lambda: finished_runs(broker_env["DATABASE_URL"]), 60, "runs finished")
    stored = stored_rows(broker_env["DATABASE_URL"])
    assert set(stored) == set(SOURCES)

    for source in SOURCES:
        status, inserted = runs[source]
        assert inserted == stored[source]  # the first run of each source inserted all it has
        rows = f'kasparro_unified_records{{job="kasparro-api",source="{source}"}}'
        comes_to(prometheus_url, rows, stored[source])
        labels = f'job="kasparro-worker",source="{source}"'
        comes_to(
            prometheus_url, f'kasparro_etl_rows_total{{{labels},outcome="inserted"}}', inserted
        )
        comes_to(prometheus_url, f'kasparro_etl_runs_total{{{labels},status="{status}"}}', 1)
    assert single_value(prometheus_url, 'up{job="kasparro-worker"}') == 1
    assert single_value(prometheus_url, 'up{job="kasparro-api"}') == 1
    # The same API refuses a scrape without the token: Prometheus sees the target down.
    comes_to(prometheus_url, 'up{job="anyone"}', 0)
    assert "401" in target_error(prometheus_url, "anyone")
    refused = requests.get(f"{api}/metrics", timeout=5)
    assert (refused.status_code, refused.json()["code"]) == (401, 401)


def target_error(prometheus_url: str, job: str) -> str:
    """Return the last scrape error Prometheus reports for ``job``'s target."""
    targets = requests.get(f"{prometheus_url}/api/v1/targets", timeout=5).json()["data"]
    [target] = [t for t in targets["activeTargets"] if t["labels"]["job"] == job]
    return target["lastError"]


@pytest.mark.slow
def test_the_api_role_counts_the_requests_of_every_gunicorn_worker_in_one_answer(
    roles, tmp_path, broker_env
):
    port = free_port()
    env = {**broker_env, "PORT": str(port), "WEB_CONCURRENCY": "2", "ETL_RUN_ON_START": "0"}
    api = f"http://127.0.0.1:{port}"
    roles("api", env, lambda log: answers(f"{api}/health"))
    sent = []

    def both_workers_have_served():
        with ThreadPoolExecutor(4) as pool:  # concurrent, so that both workers take some
            sent.extend(pool.map(lambda _: requests.get(f"{api}/runs", timeout=5), range(8)))
        writers = {path.stem.rsplit("_", 1)[1] for path in (tmp_path / "metrics" / "api").iterdir()}
        return len(writers) >= 2

    eventually(both_workers_have_served, 30, "requests served by both workers")

    line = 'kasparro_http_requests_total{endpoint="/runs",method="GET",status="200"}'
    for _ in range(4):  # whichever worker answers, it counts for both
        text = requests.get(f"{api}/metrics", timeout=5).text
        assert [row.split()[-1] for row in text.splitlines() if row.startswith(line)] == [
            f"{len(sent)}.0"
        ]
    assert {response.status_code for response in sent} == {200}
