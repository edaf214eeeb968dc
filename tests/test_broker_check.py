"""The broker check: a broker that answered is trusted for BROKER_ANSWER_SECONDS, no longer.

/health and run control ask whether the broker answers, and a ping opens a connection; so an
answer that it does is reused for a short while, and an answer that it does not never is. A
redis-server of each test's own is stopped and started again.
"""

import os
import time

import pytest
import redis

from kasparro import create_app
from kasparro.celery_app import BROKER_ANSWER_SECONDS, broker_reachable
from tests.processes import ManagedProcess, free_port


@pytest.fixture
def broker(tmp_path):
    """Start a redis-server of this test's own on a free loopback port; yield it and its URL."""
    port = free_port()
    argv = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(tmp_path),
    ]  # fmt: skip
    server = ManagedProcess(
        argv, dict(os.environ), tmp_path / "redis.log", lambda log: "Ready to accept" in log
    )
    server.start(timeout=20)
    yield server, f"redis://127.0.0.1:{port}/0"
    server.stop()


@pytest.fixture
def celery_app(broker, tmp_path):
    """Return the Celery app of an app whose broker is that redis-server."""
    _, url = broker
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'etl.db'}",
            "CELERY": {"broker_url": url, "result_backend": url, "task_always_eager": False},
            "LOG_LEVEL": "WARNING",
        }
    )
    return app.extensions["celery"]


def test_a_broker_that_answered_is_not_pinged_again_within_the_interval(broker, celery_app):
    _, url = broker
    with redis.Redis.from_url(url) as stats:

        def connections() -> int:
            return stats.info("stats")["total_connections_received"]

        before = connections()
        assert broker_reachable(celery_app) is True
        per_ping = connections() - before
        started = time.monotonic()
        answers = [broker_reachable(celery_app) for _ in range(50)]
        elapsed = time.monotonic() - started
        pings = (connections() - before - per_ping) / per_ping

    assert per_ping >= 1
    assert answers == [True] * 50
    assert pings <= elapsed // BROKER_ANSWER_SECONDS


def test_a_broker_that_stops_answering_is_reported_once_the_interval_has_passed(broker, celery_app):
    server, _ = broker
    assert broker_reachable(celery_app) is True

    server.stop()
    time.sleep(BROKER_ANSWER_SECONDS)

    assert broker_reachable(celery_app) is False


def test_a_broker_that_answers_again_is_seen_at_once(broker, celery_app):
    server, _ = broker
    server.stop()
    assert broker_reachable(celery_app) is False

    server.start(timeout=20)

    assert broker_reachable(celery_app) is True
