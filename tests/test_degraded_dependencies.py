"""Degraded dependencies and public API limits, against real PostgreSQL and Redis.

The tests start a PostgreSQL cluster and a Redis server of their own, on free loopback ports with
their files in a temporary directory, and stop and restart them to take the app's dependencies
away and give them back. The machine's shared PostgreSQL (5432) and Redis (6379) are never touched.

- Database down: /health answers 503 with JSON, and /data, /stats, /runs and POST /etl/run answer
  503 with JSON; once the database is back the same app serves again.
- Redis down: /data keeps serving (the request limiter falls back to memory), /health says
  "degraded", POST /etl/run answers 503 saying the task queue is unreachable and closes the run
  it recorded as FAILED; once Redis is back runs are queued again.
- Limits: a per-client limit answers 429 with JSON and Retry-After, /health is never limited, the
  embedded mode has no limit; over-long query strings get 414 and over-long arguments 422.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
import sqlalchemy as sa

from kasparro import create_app
from kasparro.extensions import db
from kasparro.models import EtlRun
from tests.conftest import ADMIN_TOKEN, migrate

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PUBLIC_ENDPOINTS = ("/data", "/stats", "/runs", "/runs/1")


def postgres_bindir() -> Path:
    """Return the directory holding initdb and pg_ctl (TEST_PG_BIN, else the newest installed)."""
    if os.environ.get("TEST_PG_BIN"):
        return Path(os.environ["TEST_PG_BIN"])
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if installed:
        return installed[-1].parent
    found = shutil.which("initdb")
    if found is None:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are needed; set TEST_PG_BIN")
    return Path(found).parent


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivatePostgres:
    """A throwaway PostgreSQL cluster: trust auth, loopback only, socket in its own directory.

    initdb refuses to run as root, so as root every server command runs as the postgres user.
    """

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="kasparro-pg-"))
        self.port = free_port()
        self.bindir = postgres_bindir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        """Run a server tool in the cluster's directory (as postgres when we are root)."""
        argv = [str(self.bindir / tool), *args]
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=90)

    def _check(self, tool: str, *args: str) -> None:
        """Run a server tool; fail with its output and the server log when it fails."""
        done = self._run(tool, *args)
        if done.returncode != 0:
            log_path = self.root / "postgres.log"
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise RuntimeError(f"{tool} {args[-1]} failed:\n{done.stdout}{done.stderr}\n{log}")

    def init(self) -> "PrivatePostgres":
        self._check(
            "initdb", "-D", "data", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"
        )
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self._check(
            "pg_ctl", "-D", "data", "-l", "postgres.log", "-o", options, "-w", "-t", "60", "start"
        )

    def stop(self) -> None:
        self._check("pg_ctl", "-D", "data", "-m", "fast", "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", "data", "status").returncode == 0

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        if self.is_running():
            self._run("pg_ctl", "-D", "data", "-m", "immediate", "-w", "-t", "60", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A throwaway redis-server on a free loopback port, without persistence."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="kasparro-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.root),
        ]  # fmt: skip
        with open(self.root / "redis.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server did not start:\n{(self.root / 'redis.log').read_text()}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres():
    """Start a PostgreSQL cluster of this module's own with a migrated database; remove it after."""
    server = PrivatePostgres()
    try:
        server.init().start()
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{server.port}/postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE kasparro")
        migrate(server.url("kasparro"))
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def private_redis():
    """Start a redis-server of this module's own; remove it after."""
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def full_stack_app(private_postgres, private_redis):
    """Return a factory of apps like the full stack's: PostgreSQL, Redis as broker, result
    backend and limiter storage, an admin token and a public rate limit.

    No application context stays pushed, so each request gets its own, as under gunicorn.
    """
    with private_redis.client() as client:
        client.flushdb()
    built = []

    def build(rate_limit: str = "1000/minute"):
        application = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": private_postgres.url("kasparro"),
                "REDIS_URL": private_redis.url,
                "CELERY": {
                    "broker_url": private_redis.url,
                    "result_backend": private_redis.url,
                    "task_default_queue": f"kasparro-degraded-{uuid.uuid4().hex[:8]}",
                    "task_always_eager": False,
                },
                "ETL_ADMIN_TOKEN": ADMIN_TOKEN,
                "PUBLIC_RATE_LIMIT": rate_limit,
                "API_SOURCE_URL": "http://127.0.0.1:9/unused",
                "LOG_LEVEL": "WARNING",
            }
        )
        built.append(application)
        return application

    yield build
    for application in built:
        # Flask-Limiter keeps every app's limit on the shared blueprints (see the last test):
        # lift this one so it cannot limit apps that later tests build.
        application.config["PUBLIC_RATE_LIMIT"] = ""
        with application.app_context():
            # No worker runs here: close what a test queued, so a later test may start the source.
            db.session.execute(
                sa.update(EtlRun).where(EtlRun.status == "RUNNING").values(status="FAILED")
            )
            db.session.commit()
            db.session.remove()
            db.engine.dispose()


def assert_json_error(response, status: int) -> dict:
    """Assert an error answer is JSON with that status, and neither an HTML page nor a trace."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.mimetype == "application/json", (response.mimetype, text)
    assert "<html" not in text.lower() and "Traceback" not in text
    body = response.get_json()
    assert body["code"] == status, body
    assert set(body) <= {"code", "status", "message", "errors"}, body  # the declared Error schema
    assert body.get("message") or body.get("errors"), body  # what is wrong, in words or per field
    assert ADMIN_TOKEN not in text
    return body


def test_both_up_serves_and_reports_both_connected(full_stack_app, private_redis):
    """With both dependencies up: /data serves, /health sees both, limits are counted in Redis."""
    client = full_stack_app().test_client()
    health = client.get("/health")
    assert health.status_code == 200, health.get_data(as_text=True)
    assert health.get_json()["status"] in ("healthy", "degraded")
    assert health.get_json()["database_connected"] is True
    assert health.get_json()["broker_connected"] is True
    for path in PUBLIC_ENDPOINTS[:3]:
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True))
    with private_redis.client() as redis_client:
        assert any(b"kasparro" in key for key in redis_client.keys()), "limits are not in Redis"


def test_database_down_answers_503_json_then_recovers(full_stack_app, private_postgres):
    """Database stopped: 503 JSON everywhere it is needed; started again: the same app serves."""
    client = full_stack_app().test_client()
    assert client.get("/data").status_code == 200  # the pool now holds a connection to lose
    private_postgres.stop()
    try:
        health = client.get("/health")
        assert health.status_code == 503, health.get_data(as_text=True)
        assert health.mimetype == "application/json"
        body = health.get_json()
        assert body["status"] == "unhealthy"
        assert body["database_connected"] is False
        assert body["broker_connected"] is True
        for path in PUBLIC_ENDPOINTS:
            assert_json_error(client.get(path), 503)
        assert_json_error(client.get("/data?page_size=5&asset=bitcoin"), 503)
        assert_json_error(client.post("/etl/run", json={"sources": ["csv1"]}, headers=AUTH), 503)
    finally:
        private_postgres.start()
    for path in ("/data", "/stats", "/runs"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True))
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json()["database_connected"] is True


def test_redis_down_keeps_data_serving_and_refuses_runs(full_stack_app, private_redis):
    """Redis stopped: /data serves, /health is degraded, POST /etl/run is 503 and opens no run;
    Redis started again: runs are queued (202)."""
    app = full_stack_app()
    client = app.test_client()
    assert client.get("/data").status_code == 200
    private_redis.stop()
    try:
        for _ in range(3):
            response = client.get("/data?page_size=5")
            assert response.status_code == 200, response.get_data(as_text=True)
        for path in ("/stats", "/runs"):
            assert client.get(path).status_code == 200, path
        health = client.get("/health")
        assert health.status_code == 200, health.get_data(as_text=True)
        assert health.get_json()["status"] == "degraded"
        assert health.get_json()["broker_connected"] is False
        assert health.get_json()["database_connected"] is True

        started = time.monotonic()
        refused = client.post("/etl/run", json={"sources": ["csv1"]}, headers=AUTH)
        elapsed = time.monotonic() - started
        with app.app_context():
            runs = db.session.scalars(
                sa.select(EtlRun).where(EtlRun.source == "csv1").order_by(EtlRun.id)
            ).all()
            db.session.remove()
        assert runs == [], "a request refused before any run started must not open one"
        body = assert_json_error(refused, 503)
        assert body["message"] == "the task queue is unreachable; no run was started", body
        assert elapsed < 10, f"POST /etl/run took {elapsed:.1f}s to give up"
    finally:
        private_redis.start()
    queued = client.post("/etl/run", json={"sources": ["csv1"]}, headers=AUTH)
    assert queued.status_code == 202, queued.get_data(as_text=True)
    assert queued.get_json()["mode"] == "queued"
    assert [run["source"] for run in queued.get_json()["runs"]] == ["csv1"]
    health = client.get("/health")
    assert health.get_json()["broker_connected"] is True


@pytest.fixture
def embedded_app(sqlite_template, tmp_path):
    """Return a factory of SQLite apps in the embedded mode, with extra settings."""

    def build(**config):
        shutil.copy(sqlite_template, tmp_path / "etl.db")
        return create_app(
            {
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'etl.db'}",
                "REDIS_URL": "",
                "LOG_LEVEL": "WARNING",
                **config,
            }
        )

    return build


def test_query_string_and_argument_lengths_are_bounded(embedded_app):
    """Over 2048 bytes of query string: 414; over-long or out-of-range arguments: 422; JSON all."""
    client = embedded_app(PUBLIC_RATE_LIMIT="").test_client()
    assert_json_error(client.get("/data?asset=" + "a" * 2100), 414)
    assert_json_error(client.get("/runs?" + "x=1&" * 600), 414)
    body = assert_json_error(client.get("/data?asset=" + "a" * 201), 422)
    assert "asset" in body["errors"]["query"], body
    assert client.get("/data?asset=" + "a" * 200).status_code == 200
    assert (
        "symbol"
        in assert_json_error(client.get("/data?symbol=" + "B" * 51), 422)["errors"]["query"]
    )
    assert (
        "page_size" in assert_json_error(client.get("/data?page_size=101"), 422)["errors"]["query"]
    )
    assert client.get("/data?page_size=100").status_code == 200
    assert "limit" in assert_json_error(client.get("/runs?limit=501"), 422)["errors"]["query"]


def test_no_limit_by_default_in_the_embedded_mode(embedded_app, monkeypatch):
    """Without a broker (embedded default) PUBLIC_RATE_LIMIT is empty and nothing is limited."""
    for name in ("PUBLIC_RATE_LIMIT", "CELERY_BROKER_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    application = embedded_app()
    assert application.config["PUBLIC_RATE_LIMIT"] == ""
    client = application.test_client()
    statuses = {client.get("/data").status_code for _ in range(40)}
    assert statuses == {200}


def test_rate_limit_answers_429_json_with_retry_after(full_stack_app, private_redis):
    """PUBLIC_RATE_LIMIT=3/minute, counted in Redis: the 4th request of a client is 429 JSON with
    Retry-After; /health is never limited; another client has a budget of its own."""
    client = full_stack_app(rate_limit="3/minute").test_client()
    for path in ("/data", "/stats"):
        assert [client.get(path).status_code for _ in range(3)] == [200] * 3, path
        limited = client.get(path)
        body = assert_json_error(limited, 429)
        assert "too many requests" in body["message"]
        assert int(limited.headers["Retry-After"]) > 0, dict(limited.headers)
    assert [client.get("/health").status_code for _ in range(10)] == [200] * 10
    assert client.get("/data", environ_base={"REMOTE_ADDR": "127.0.0.2"}).status_code == 200
    with private_redis.client() as redis_client:
        assert any(b"kasparro" in key for key in redis_client.keys()), "limits are not in Redis"


def test_each_app_has_only_its_own_limit(embedded_app):
    """An app's limit does not carry over to the next app built in the same process."""
    strict = embedded_app(PUBLIC_RATE_LIMIT="2/minute")
    try:
        assert strict.test_client().get("/stats").status_code == 200
        relaxed = embedded_app(PUBLIC_RATE_LIMIT="1000/minute").test_client()
        statuses = [relaxed.get("/stats").status_code for _ in range(5)]
        assert statuses == [200] * 5, "a limit of an earlier app applied to this one"
    finally:
        strict.config["PUBLIC_RATE_LIMIT"] = ""  # so it cannot limit apps built after this test
