"""Fixtures: both database engines, the CoinGecko imitation, an app, a client and a runner.

PostgreSQL tests use a database of their own, created for this test session and dropped at its
end; SQLite tests use a fresh file copied from a migrated template.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import redis
import sqlalchemy as sa
from flask_migrate import upgrade

from kasparro import create_app
from kasparro.etl.load import insert_raw
from kasparro.etl.pipeline import run_source
from kasparro.etl.runs import fail_run, start_run
from kasparro.etl.sources import SOURCES, get_source
from kasparro.etl.sources.csv_feed import CsvSource
from kasparro.extensions import db
from kasparro.models import Base
from tests.coingecko_imitation import CoinGeckoImitation
from tests.plans import fill_unified_records
from tests.processes import ManagedProcess, worker_argv, worker_ready

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_API_KEY = "cg-test-key-9f8e7d6c5b4a"
# Tests pace and back off in milliseconds; the tests of pacing and backoff set their own values.
FAST_UPSTREAM = {
    "API_CALLS_PER_MINUTE": 600_000.0,
    "API_BACKOFF_BASE_SECONDS": 0.01,
    "API_BACKOFF_MAX_SECONDS": 0.05,
}
# Every table, dependants first: the models (each source's raw table among them) say which.
TABLES = tuple(table.name for table in reversed(Base.metadata.sorted_tables))


def migrate(url: str) -> None:
    """Apply every migration to the database at ``url``."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade()
        db.engine.dispose()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_stale_databases(conn) -> None:
    """Drop databases left by test sessions that were killed before their teardown."""
    names = conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'kasparro\\_test\\_%'"
    ).fetchall()
    for (name,) in names:
        pid = name.split("_")[2]
        if pid.isdigit() and not _process_alive(int(pid)):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """Create a migrated PostgreSQL database of its own, yield its URL, and drop it after."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    try:
        migrate(url.render_as_string(hide_password=False))
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url():
    """Create this session's own PostgreSQL database, migrated; drop it at the end."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        _drop_stale_databases(conn)
    with scratch_database("kasparro_test") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """Return a migrated SQLite file to copy for each test."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


def emptied(url: str) -> str:
    """Empty every table of the PostgreSQL database at ``url`` and return the URL."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Return an empty, migrated database on each engine in turn."""
    if request.param == "postgresql":
        return emptied(request.getfixturevalue("postgres_url"))
    path = tmp_path / "etl.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), path)
    return f"sqlite:///{path}"


@pytest.fixture
def coingecko():
    """Start the CoinGecko imitation on a free loopback port."""
    with CoinGeckoImitation() as imitation:
        yield imitation


@pytest.fixture
def csv_paths(tmp_path):
    """Copy the bundled CSV feeds where a test may append to or replace them."""
    paths = {}
    for source in SOURCES.values():
        if issubclass(source, CsvSource):
            paths[source.path_setting] = tmp_path / source.bundled_file
            shutil.copy(DATA_DIR / source.bundled_file, paths[source.path_setting])
    return paths


@pytest.fixture
def settings(database_url, coingecko, csv_paths):
    """Return the configuration a test app runs with; tests may change it before ``app``."""
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "API_SOURCE_URL": coingecko.url,
        "API_KEY": TEST_API_KEY,
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        **FAST_UPSTREAM,
        **{key: str(path) for key, path in csv_paths.items()},
    }


@pytest.fixture
def app(settings):
    """Yield the app inside an application context, and release its connections after."""
    application = create_app(dict(settings))
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def postgres_app(postgres_url):
    """Yield an app on this session's PostgreSQL database, emptied, for PostgreSQL's own ways."""
    application = create_app(
        {"SQLALCHEMY_DATABASE_URI": emptied(postgres_url), "LOG_LEVEL": "INFO"}
    )
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def filled_assets(postgres_app):
    """Return the PostgreSQL app with 6,000 observations of 100 stored assets, for their plans."""
    fill_unified_records(rows=6_000, assets=100, step=timedelta(minutes=1), with_assets=True)
    return postgres_app


@pytest.fixture
def client(app):
    """Return a test client for the app."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """Return a CLI runner for the app."""
    return app.test_cli_runner()


@pytest.fixture
def run_etl(app):
    """Return a function that runs sources in-process and returns their finished runs."""

    def run(*sources: str, trigger: str = "cli"):
        return {name: run_source(db.session, name, app.config, trigger=trigger) for name in sources}

    return run


@pytest.fixture
def table_counts(app):
    """Return a function that counts the rows of every table."""

    def counts() -> dict[str, int]:
        return {
            table: db.session.scalar(sa.text(f"SELECT COUNT(*) FROM {table}")) for table in TABLES
        }

    return counts


def store_without_loading(source: str, settings) -> None:
    """Store what ``source`` reads as raw rows only, as a version that loaded them later did."""
    run_id = start_run(db.session, source, "cli", settings)
    reader = get_source(source, settings)
    insert_raw(db.session, reader.raw_model, list(reader.read(db.session, None)), run_id)
    db.session.commit()
    fail_run(db.session, run_id, RuntimeError("stopped before loading"))


TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "13"))
ADMIN_TOKEN = "admin-token-test-7c1d2e3f"


@pytest.fixture(scope="session")
def redis_url():
    """Return a Redis database set aside for tests, flushed before and after the session."""
    url = f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def broker_env(redis_url, coingecko, csv_paths, postgres_url):
    """Return the environment a real worker and the test app share: PostgreSQL, Redis, a queue."""
    return {
        **os.environ,
        "DATABASE_URL": emptied(postgres_url),
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "CELERY_QUEUE": f"kasparro-test-{uuid.uuid4().hex[:8]}",
        "CELERY_VISIBILITY_TIMEOUT": "8",
        "CELERY_UNACKED_RESTORE_SECONDS": "1",
        "API_SOURCE_URL": coingecko.url,
        "API_KEY": TEST_API_KEY,
        "ETL_ADMIN_TOKEN": ADMIN_TOKEN,
        "LOG_LEVEL": "INFO",
        **{key: str(value) for key, value in FAST_UPSTREAM.items()},
        **{key: str(path) for key, path in csv_paths.items()},
    }


def queued_on_redis(env: dict[str, str]) -> dict[str, object]:
    """Return Celery's settings for an app that queues its tasks for a worker on ``env``'s Redis."""
    return {
        "broker_url": env["CELERY_BROKER_URL"],
        "result_backend": env["CELERY_RESULT_BACKEND"],
        "task_default_queue": env["CELERY_QUEUE"],
        "task_always_eager": False,
    }


@pytest.fixture
def broker_app(broker_env, csv_paths):
    """Yield an app on PostgreSQL that queues its tasks on Redis instead of running them."""
    env = broker_env
    application = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": env["DATABASE_URL"],
            "API_SOURCE_URL": env["API_SOURCE_URL"],
            "API_KEY": env["API_KEY"],
            "ETL_ADMIN_TOKEN": env["ETL_ADMIN_TOKEN"],
            **{setting: env[setting] for setting in csv_paths},
            "REDIS_URL": env["CELERY_BROKER_URL"],
            **FAST_UPSTREAM,
            "CELERY": queued_on_redis(env),
        }
    )
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def start_worker(broker_env, tmp_path):
    """Return a function that starts a real worker; every worker is stopped after the test."""
    workers = []

    def start(**extra_env: str) -> ManagedProcess:
        worker = ManagedProcess(
            worker_argv(), {**broker_env, **extra_env}, tmp_path / "worker.log", worker_ready
        ).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
