"""Upstream call pacing: in-process, through Redis, and across two real processes.

The must-show test starts two ``flask etl run --source coingecko_api`` processes at once against
one imitation and measures, at the imitation, that together they stay within the configured rate
when they share Redis, and that they do not when each paces only itself.
"""

import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from kasparro.etl import ratelimit
from kasparro.etl.ratelimit import LocalPacer, RedisPacer, pacer_for
from tests.coingecko_imitation import make_coins

ROOT = Path(__file__).resolve().parent.parent
JITTER = 0.05  # seconds of scheduling and network noise between a slot and the request's arrival


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it or a test advances it."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    """Make LocalPacer read a fake clock, so spacing is checked without sleeping."""
    fake = FakeClock()
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_local_pacer_spaces_calls_by_sixty_over_the_rate(clock):
    pacer = LocalPacer(unique("local"), 30, clock.sleep)  # 30 a minute: 2 s apart

    waits = [pacer.wait() for _ in range(4)]

    assert waits == [0.0, 2.0, 2.0, 2.0]
    assert clock.sleeps == [2.0, 2.0, 2.0]
    assert clock.now == 1006.0


def test_local_pacer_does_not_wait_when_calls_are_already_slow_enough(clock):
    pacer = LocalPacer(unique("local"), 60, clock.sleep)

    first = pacer.wait()
    clock.now += 5.0
    second = pacer.wait()
    clock.now += 0.25
    third = pacer.wait()

    assert (first, second, third) == (0.0, 0.0, 0.75)
    assert clock.sleeps == [0.75]


def test_local_pacers_of_one_source_share_slots_and_other_sources_do_not(clock):
    name = unique("local")
    api, worker = LocalPacer(name, 60, clock.sleep), LocalPacer(name, 60, clock.sleep)
    other = LocalPacer(unique("other"), 60, clock.sleep)

    assert [api._reserve(), worker._reserve(), api._reserve(), other._reserve()] == [
        0.0,
        1.0,
        2.0,
        0.0,
    ]


@pytest.mark.parametrize("rate", [0, -1])
def test_a_rate_that_is_not_positive_is_refused(rate):
    with pytest.raises(ValueError, match="calls per minute for x must be positive"):
        LocalPacer("x", rate, lambda seconds: None)


def test_pacer_for_uses_redis_only_when_a_url_is_given(redis_url):
    local = pacer_for(unique("choice"), 30, "")
    shared = pacer_for(unique("choice"), 30, redis_url)
    try:
        assert type(local) is LocalPacer
        assert type(shared) is RedisPacer
    finally:
        local.close()
        shared.close()


@pytest.fixture
def redis_pacers(redis_url):
    """Return a function making RedisPacers that record their sleeps; close them after."""
    made = []

    def make(name: str, calls_per_minute: float, sleeps: list[float]) -> RedisPacer:
        pacer = RedisPacer(name, calls_per_minute, sleeps.append, redis_url)
        made.append(pacer)
        return pacer

    yield make
    for pacer in made:
        pacer.client.delete(pacer.key)
        pacer.close()


def test_redis_pacers_on_one_key_share_slots(redis_pacers, redis_url):
    name = unique("shared")
    api_sleeps, worker_sleeps = [], []
    api, worker = redis_pacers(name, 60, api_sleeps), redis_pacers(name, 60, worker_sleeps)

    waits = [api.wait(), worker.wait(), api.wait(), worker.wait()]

    assert waits[0] == 0.0
    assert waits[1:] == [pytest.approx(n, abs=JITTER) for n in (1.0, 2.0, 3.0)]
    assert api_sleeps == [waits[2]]
    assert worker_sleeps == [waits[1], waits[3]]
    client = redis.Redis.from_url(redis_url)
    try:
        assert 0 < client.pttl(api.key) <= (3 + 1) * 1000 + 1000  # it expires once idle
    finally:
        client.close()


def test_redis_pacers_of_different_sources_do_not_share_slots(redis_pacers):
    sleeps: list[float] = []
    first = redis_pacers(unique("one"), 60, sleeps)
    second = redis_pacers(unique("two"), 60, sleeps)

    assert [first.wait(), second.wait()] == [0.0, 0.0]
    assert sleeps == []


def test_a_paced_run_spaces_its_page_calls_at_the_imitation(app, coingecko, run_etl):
    coingecko.coins = make_coins(9)
    app.config.update(API_CALLS_PER_MINUTE=600, API_PER_PAGE=3)  # 0.1 s apart

    run = run_etl("coingecko_api")["coingecko_api"]

    assert run.status == "SUCCESS"
    times = [r.at for r in coingecko.page_requests()]
    assert len(times) == 4  # three full pages, then an empty one
    assert min(gaps(times)) >= 0.1 - JITTER


def gaps(times: list[float]) -> list[float]:
    ordered = sorted(times)
    return [b - a for a, b in zip(ordered, ordered[1:], strict=False)]


def most_in_window(times: list[float], seconds: float) -> int:
    """Return the most requests that arrived within any window ``[t, t + seconds)``."""
    ordered = sorted(times)
    return max(sum(1 for u in ordered if t <= u < t + seconds) for t in ordered)


RATE_PER_MINUTE = 120  # 2 a second: 0.5 s apart
INTERVAL = 60 / RATE_PER_MINUTE
PER_PAGE = 2
COINS = 9  # pages of 2, 2, 2, 2, 1: five calls per process


def run_two_cli_processes(tmp_path, sqlite_template, coingecko, redis_url: str):
    """Run two ``flask etl run`` processes at once, each on its own SQLite file; wait for both."""
    coingecko.coins = make_coins(COINS)
    processes = []
    for label in ("a", "b"):
        database = tmp_path / f"{label}.db"
        database.write_bytes(Path(sqlite_template).read_bytes())
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{database}",
            "API_SOURCE_URL": coingecko.url,
            "API_KEY": f"process-{label}-key",  # tells the two apart at the imitation
            "API_CALLS_PER_MINUTE": str(RATE_PER_MINUTE),
            "API_PER_PAGE": str(PER_PAGE),
            "API_MAX_PAGES": "10",
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": "",
            "CELERY_RESULT_BACKEND": "",
            "LOG_LEVEL": "WARNING",
        }
        argv = [sys.executable, "-m", "flask", "--app", "wsgi", "etl", "run"]
        argv += ["--source", "coingecko_api"]
        with open(tmp_path / f"{label}.log", "wb") as log:  # the child keeps its own descriptor
            processes.append(
                subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
    for process in processes:
        try:
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    outputs = [(tmp_path / f"{label}.log").read_text() for label in ("a", "b")]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert "SUCCESS" in output, output
    by_process = {
        label: [
            r.at
            for r in coingecko.page_requests()
            if r.headers.get("x-cg-demo-api-key") == f"process-{label}-key"
        ]
        for label in ("a", "b")
    }
    assert {label: len(times) for label, times in by_process.items()} == {"a": 5, "b": 5}
    return by_process


@pytest.mark.slow
def test_two_processes_sharing_redis_stay_within_the_rate_together(
    tmp_path, sqlite_template, coingecko, redis_url
):
    client = redis.Redis.from_url(redis_url)
    client.delete("kasparro:ratelimit:coingecko_api")  # no slot left over from another test
    client.close()

    by_process = run_two_cli_processes(tmp_path, sqlite_template, coingecko, redis_url)

    times = by_process["a"] + by_process["b"]
    print(f"shared limiter gaps: {[round(g, 3) for g in gaps(times)]}")
    assert min(gaps(times)) >= INTERVAL - JITTER
    assert most_in_window(times, 1.0 - JITTER) <= RATE_PER_MINUTE / 60  # 2 in any second
    # The calls really were concurrent: each process was still calling while the other was.
    assert min(by_process["a"]) < max(by_process["b"])
    assert min(by_process["b"]) < max(by_process["a"])


@pytest.mark.slow
def test_two_processes_pacing_only_themselves_overlap(tmp_path, sqlite_template, coingecko):
    by_process = run_two_cli_processes(tmp_path, sqlite_template, coingecko, redis_url="")

    for times in by_process.values():
        assert min(gaps(times)) >= INTERVAL - JITTER  # each process paces itself
    times = by_process["a"] + by_process["b"]
    print(f"in-process limiter gaps: {[round(g, 3) for g in gaps(times)]}")
    assert min(gaps(times)) < INTERVAL - JITTER  # together they break the rate
    assert most_in_window(times, 1.0 - JITTER) > 2
