"""Invariant 7: the API key, the admin and metrics tokens and the database password stay inside.

One test runs every source and every endpoint, on the success and the failure paths, with
recognisable secrets, and then searches everything a user or an operator could see for them:
the logs (JSON lines on stderr, at DEBUG), every response body and header, the CLI's output, and
what the run log stores. Error bodies must not carry SQL or tracebacks either.
"""

import json
import socket
import traceback
import uuid
from dataclasses import dataclass, field

import psycopg
import pytest
import sqlalchemy as sa

from kasparro import create_app
from kasparro.extensions import db
from tests.conftest import FAST_UPSTREAM, PG_ADMIN_URL, emptied

TOKEN_SUFFIX = uuid.uuid4().hex[:12]
API_KEY = f"CG-KEY-SECRET-{TOKEN_SUFFIX}"
ADMIN_TOKEN = f"ADMIN-TOKEN-SECRET-{TOKEN_SUFFIX}"
DB_PASSWORD = f"DB-PASSWORD-SECRET-{TOKEN_SUFFIX}"
METRICS_TOKEN = f"METRICS-TOKEN-SECRET-{TOKEN_SUFFIX}"
SECRETS = {"API key": API_KEY, "admin token": ADMIN_TOKEN, "database password": DB_PASSWORD,
           "metrics token": METRICS_TOKEN}  # fmt: skip
FORBIDDEN_IN_ERRORS = ("SELECT", "INSERT", "UPDATE ", "Traceback", 'File "')
SOURCES = ("coingecko_api", "csv1", "csv2")


def closed_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def secret_role(postgres_url):
    """Create a login role whose password is recognisable; drop it after the test."""
    role = f"kasparro_secret_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'")
    yield role
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        conn.execute(f"DROP ROLE IF EXISTS {role}")


def database_url_for(role: str, base_url: str, port: int | None = None) -> str:
    """Return ``base_url`` logged in as ``role`` with the secret password (on ``port``)."""
    url = sa.make_url(base_url).set(username=role, password=DB_PASSWORD)
    if port is not None:
        url = url.set(port=port)
    return url.render_as_string(hide_password=False)


def app_config(database_uri: str, api_url: str, csv_paths) -> dict:
    """Return the configuration of an app that knows all four secrets, logging at DEBUG."""
    return {
        "SQLALCHEMY_DATABASE_URI": database_uri,
        "API_SOURCE_URL": api_url,
        "API_KEY": API_KEY,
        "ETL_ADMIN_TOKEN": ADMIN_TOKEN,
        "METRICS_TOKEN": METRICS_TOKEN,
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
        **FAST_UPSTREAM,
        "API_MAX_ATTEMPTS": 2,
        "API_TIMEOUT_SECONDS": 2.0,
        "PUBLIC_RATE_LIMIT": "",
        "REDIS_URL": "",
        "CELERY": {"broker_url": "memory://", "task_always_eager": True},
        **{key: str(path) for key, path in csv_paths.items()},
    }


@dataclass
class Exposure:
    """Everything the test saw: labelled texts, and which of them are error bodies."""

    texts: list[tuple[str, str]] = field(default_factory=list)
    error_bodies: list[tuple[str, str]] = field(default_factory=list)
    # Wrong statuses are collected, not raised, so that one bug does not hide the leak checks.
    unexpected: list[str] = field(default_factory=list)

    def request(self, client, method: str, url: str, expect: int | None = None, **kwargs):
        """Make a request and keep its status, headers and body."""
        response = client.open(url, method=method, **kwargs)
        label = f"{method} {url} -> {response.status_code}"
        body = response.get_data(as_text=True)
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
        self.texts.append((label + " body", body))
        self.texts.append((label + " headers", headers))
        if response.status_code >= 400:
            self.error_bodies.append((label, body))
            if not response.is_json:
                self.unexpected.append(f"{label} is not JSON: {body[:200]}")
        if expect is not None and response.status_code != expect:
            self.unexpected.append(f"{label}, expected {expect}: {body[:300]}")
        return response

    def cli(self, app, *args: str, expect_failure: bool = False):
        """Run ``flask <args>`` and keep its output and any exception with its traceback."""
        result = app.test_cli_runner().invoke(args=list(args))
        label = "flask " + " ".join(args)
        self.texts.append((label + " output", result.output))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            self.texts.append(
                (label + " exception", "".join(traceback.format_exception(result.exception)))
            )
        if (result.exit_code != 0) != expect_failure:
            self.unexpected.append(f"{label} exited {result.exit_code}: {result.output[:300]}")
        return result


def admin(token: str = ADMIN_TOKEN, scheme: str = "Bearer") -> dict:
    return {"Authorization": f"{scheme} {token}"}


def exercise_the_api(exposure: Exposure, app, coingecko) -> None:
    """Run every source over HTTP and read every endpoint, success and failure paths."""
    client = app.test_client()
    call = exposure.request

    # Run control: every source, the right token, wrong tokens, no token, bad bodies.
    for source in SOURCES:
        started = call(client, "POST", "/etl/run", 202, json={"sources": [source]}, headers=admin())
        assert started.get_json()["mode"] == "eager", started.get_json()
    call(client, "POST", "/etl/run", 202, headers=admin())  # all sources, no body
    call(client, "POST", "/etl/run", 401, json={"sources": ["csv1"]})
    call(client, "POST", "/etl/run", 401, json={}, headers=admin(scheme="Token"))
    call(client, "POST", "/etl/run", 403, json={}, headers=admin("wrong-token"))
    call(client, "POST", "/etl/run", 403, json={}, headers=admin(ADMIN_TOKEN + "x"))
    call(client, "POST", "/etl/run", 403, json={}, headers=admin(ADMIN_TOKEN[:-1]))
    call(client, "POST", "/etl/run", 422, json={"sources": ["nope"]}, headers=admin())
    call(client, "POST", "/etl/run", 422, json={"sources": "csv1"}, headers=admin())
    call(
        client,
        "POST",
        "/etl/run",
        400,
        data="{not json",
        content_type="application/json",
        headers=admin(),
    )

    # A CoinGecko run that fails: nothing listens upstream, then the upstream answers 404.
    original = app.config["API_SOURCE_URL"]
    app.config["API_SOURCE_URL"] = f"http://127.0.0.1:{closed_port()}/api/v3/coins/markets"
    call(client, "POST", "/etl/run", 202, json={"sources": ["coingecko_api"]}, headers=admin())
    app.config["API_SOURCE_URL"] = coingecko.url + "/missing"
    call(client, "POST", "/etl/run", 202, json={"sources": ["coingecko_api"]}, headers=admin())
    app.config["API_SOURCE_URL"] = original

    # Reads, good and bad.
    for url in (
        "/data",
        "/data?page_size=100",
        "/data?source=csv2&metric=market_cap_usd",
        "/health",
        "/stats",
        "/runs",
        "/runs?limit=100",
        "/runs?status=FAILED",
        "/openapi.json",
        "/docs",
    ):
        call(client, "GET", url, 200)
    runs = client.get("/runs?limit=100").get_json()["runs"]
    assert {run["status"] for run in runs} >= {"SUCCESS", "PARTIAL", "FAILED"}
    for run in runs:
        call(client, "GET", f"/runs/{run['id']}", 200)
    for url, status in (
        ("/data?page=0", 422),
        ("/data?page_size=1000", 422),
        ("/data?since=yesterday", 422),
        ("/data?cursor=not-a-cursor", 400),
        ("/data?page=1'%3B%20DROP%20TABLE%20etl_runs%3B--", 422),
        ("/runs?limit=abc", 422),
        ("/runs?status=BOGUS", 422),
        ("/runs/999999", 404),
        ("/runs/99999999999999999999", 404),
        ("/no-such-route", 404),
        ("/data?" + "x=1&" * 600, 414),
    ):
        call(client, "GET", url, status)
    call(client, "DELETE", "/data", 405)
    call(client, "GET", "/etl/run", 405)

    # Metrics, behind their own token: the right one, none, and wrong ones.
    call(client, "GET", "/metrics", 200, headers=admin(METRICS_TOKEN))
    call(client, "GET", "/metrics", 401)
    call(client, "GET", "/metrics", 401, headers=admin(METRICS_TOKEN, scheme="Token"))
    call(client, "GET", "/metrics", 403, headers=admin(ADMIN_TOKEN))
    call(client, "GET", "/metrics", 403, headers=admin(METRICS_TOKEN + "x"))


def exercise_the_cli(exposure: Exposure, app) -> None:
    """Run the CLI successfully and into a failure (nothing listens upstream)."""
    exposure.cli(app, "etl", "run", "--source", "csv1")
    original = app.config["API_SOURCE_URL"]
    app.config["API_SOURCE_URL"] = f"http://127.0.0.1:{closed_port()}/api/v3/coins/markets"
    failed = exposure.cli(app, "etl", "run", "--source", "coingecko_api", expect_failure=True)
    assert "failed: coingecko_api" in failed.output
    app.config["API_SOURCE_URL"] = original
    exposure.cli(app, "etl", "status")


def exercise_an_unreachable_database(exposure: Exposure, role, postgres_url, coingecko, csv_paths):
    """An app whose database URL carries the password but points at a closed port."""
    url = database_url_for(role, postgres_url, port=closed_port())
    offline = create_app(app_config(url, coingecko.url, csv_paths))
    client = offline.test_client()
    try:
        health = exposure.request(client, "GET", "/health", 503)
        assert health.get_json()["database_connected"] is False
        for url in ("/data", "/stats", "/runs", "/runs/1"):
            exposure.request(client, "GET", url, 503)
        exposure.request(
            client, "POST", "/etl/run", 503, json={"sources": ["csv1"]}, headers=admin()
        )
        exposure.cli(offline, "etl", "run", "--source", "csv1", expect_failure=True)
        exposure.cli(offline, "etl", "status", expect_failure=True)
    finally:
        with offline.app_context():
            db.session.remove()
            db.engine.dispose()


def stored_run_log(url: str) -> str:
    """Return every run, rejection and checkpoint as text, read with the admin login."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            parts = []
            for table in ("etl_runs", "rejected_records", "checkpoints"):
                rows = conn.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()
                parts.append(json.dumps([dict(row) for row in rows], default=str))
    finally:
        engine.dispose()
    return "\n".join(parts)


def test_no_secret_appears_in_logs_responses_error_bodies_or_the_run_log(
    postgres_url, secret_role, coingecko, csv_paths, capfd
):
    admin_url = emptied(postgres_url)
    app = create_app(app_config(database_url_for(secret_role, admin_url), coingecko.url, csv_paths))
    exposure = Exposure()
    capfd.readouterr()
    try:
        with app.app_context():
            assert db.session.scalar(sa.text("SELECT current_user")) == secret_role
            exercise_the_api(exposure, app, coingecko)
            exercise_the_cli(exposure, app)
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    exercise_an_unreachable_database(exposure, secret_role, postgres_url, coingecko, csv_paths)
    captured = capfd.readouterr()
    logs = captured.out + captured.err
    run_log = stored_run_log(admin_url)

    # The secrets were really in use, and the logs were really captured, at DEBUG.
    assert coingecko.requests, "the CoinGecko imitation was never called"
    assert all(r.headers.get("x-cg-demo-api-key") == API_KEY for r in coingecko.requests)
    for event in ("etl.run.finished", "http.request", "etl.http.retry", '"level": "debug"'):
        assert event in logs, f"{event} was not logged"
    assert '"status": "FAILED"' in logs and "FAILED" in run_log and "PARTIAL" in run_log
    assert any("503" in label for label, _ in exposure.error_bodies)

    texts = [("logs", logs), ("stored run log", run_log), *exposure.texts]
    leaks = [
        f"{what} in {label}: ...{text[max(0, text.find(secret) - 120) : text.find(secret) + 80]}..."
        for label, text in texts
        for what, secret in SECRETS.items()
        if secret in text
    ]
    assert leaks == [], "\n".join(leaks)

    bad_errors = [
        f"{label} contains {word!r}: {body[:300]}"
        for label, body in exposure.error_bodies
        for word in FORBIDDEN_IN_ERRORS
        if word in body
    ]
    assert bad_errors == [], "\n".join(bad_errors)

    # Last, so that a wrong status does not hide a leak: every answer is the documented one.
    assert exposure.unexpected == [], "\n".join(exposure.unexpected)
