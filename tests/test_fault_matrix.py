"""CoinGecko fault matrix: every way the upstream misbehaves, and what a run does about it.

Each row is one test below, run on SQLite and on PostgreSQL, against the loopback imitation.
"Retried" means the client waited (backoff with jitter, or the server's own wait on a 429), logged
``etl.http.retry`` with source, attempt, reason and wait, and asked again. Retries stop after
``API_MAX_ATTEMPTS`` tries (default 5) or when the next wait would overrun
``API_RETRY_BUDGET_SECONDS``. A failure on page 1 fails the run and leaves the checkpoint as it
was; a failure on a later page keeps what earlier pages gave and makes the run PARTIAL.

| Fault                                               | Expected outcome                          |
|-----------------------------------------------------|-------------------------------------------|
| 429 with `Retry-After: 1`                           | retried after 1 s; SUCCESS                |
| 429 with only `x-ratelimit-reset` (Unix time +1 s)  | retried at the reset time; SUCCESS        |
| 429 whose `Retry-After` overruns the retry budget   | not retried; FAILED; checkpoint untouched |
| 500, 502, 503, then a good answer                   | retried 3 times; SUCCESS                  |
| a timeout (no answer within `API_TIMEOUT_SECONDS`)  | retried; SUCCESS                          |
| connection refused                                  | retried up to the cap (5 tries); FAILED;  |
|                                                     | checkpoint untouched                      |
| 401 (any 4xx other than 429)                        | not retried; FAILED; checkpoint untouched |
| malformed JSON                                      | not retried; FAILED; checkpoint untouched |
| an HTML error page with status 200                  | not retried; FAILED; checkpoint untouched |
| a JSON object instead of a list                     | not retried; FAILED; checkpoint untouched |
| an empty list                                       | SUCCESS; nothing loaded                   |
| page 2 fails (503, all tries) after page 1          | PARTIAL: page 1 loaded, error "stopped    |
|                                                     | after page 1: ..."; the next run resumes  |
| numbers sent as strings (`"87387.5"`)               | loaded, exactly                           |
| a coin with null in every field                     | rejected with a reason; PARTIAL; the      |
|                                                     | other coins loaded                        |
| values that are not coins (`"hello"`, `42`,         | each rejected with a reason; PARTIAL;     |
| `{"foo": 1}`)                                       | the other coins loaded                    |
"""

import json
import socket
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from kasparro.extensions import db
from kasparro.models import Checkpoint, RawApiRecord, RejectedRecord, UnifiedRecord
from tests.coingecko_imitation import Fault, make_coins

SOURCE = "coingecko_api"
HTML_PAGE = "<!DOCTYPE html><html><body><h1>Something went wrong</h1></body></html>"


def count(model, *where) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def retries(capfd) -> list[dict]:
    """Return the ``etl.http.retry`` events logged (JSON lines on stderr) so far."""
    events = []
    for line in capfd.readouterr().err.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "etl.http.retry":
            events.append(event)
    return events


def checkpoint_state() -> tuple | None:
    """Return everything a checkpoint row holds, read fresh from the database."""
    db.session.expire_all()
    checkpoint = db.session.get(Checkpoint, SOURCE)
    if checkpoint is None:
        return None
    return (
        checkpoint.cursor,
        checkpoint.last_raw_id,
        checkpoint.last_external_id,
        checkpoint.run_id,
        checkpoint.updated_at,
    )


@pytest.fixture
def loaded_once(app, coingecko, run_etl, capfd):
    """Run the source once, successfully, so there is a checkpoint a failure must not touch."""
    run = run_etl(SOURCE)[SOURCE]
    assert run.status == "SUCCESS"
    coingecko.move_price("bitcoin", 88000.0)  # news a successful run would move the checkpoint to
    capfd.readouterr()
    state = checkpoint_state()
    assert state is not None
    return state


def assert_failed_untouched(run, before, error_part: str) -> None:
    assert run.status == "FAILED"
    assert error_part in run.error
    assert run.error.startswith("SourceError: ")
    assert checkpoint_state() == before
    assert run.checkpoint_after == before[0]
    assert (run.rows_read, run.inserted, run.updated) == (0, 0, 0)


def gap_after(requests, status: int) -> float:
    """Return the time between the request answered ``status`` and the one after it."""
    index = next(i for i, r in enumerate(requests) if r.status == status)
    return requests[index + 1].at - requests[index].at


def test_429_with_retry_after_waits_that_long_then_succeeds(app, coingecko, run_etl, capfd):
    coingecko.fail_next(Fault(429, headers={"Retry-After": "1"}))

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.rows_read, run.inserted) == ("SUCCESS", 5, 15)
    requests = coingecko.page_requests()
    assert [r.status for r in requests] == [429, 200]
    assert gap_after(requests, 429) >= 0.9
    [retry] = retries(capfd)
    assert retry["source"] == SOURCE
    assert (retry["attempt"], retry["reason"], retry["wait_seconds"]) == (1, "HTTP 429", 1.0)


def test_429_with_only_x_ratelimit_reset_waits_until_the_reset_then_succeeds(
    app, coingecko, run_etl, capfd
):
    reset = time.time() + 1.0
    # The same moment on the clock the imitation stamps requests with.
    reset_on_monotonic = time.monotonic() + (reset - time.time())
    coingecko.fail_next(Fault(429, headers={"x-ratelimit-reset": f"{reset:.3f}"}))

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.rows_read, run.inserted) == ("SUCCESS", 5, 15)
    requests = coingecko.page_requests()
    assert [r.status for r in requests] == [429, 200]
    # Not before the reset: how long after the 429 that is depends on when the run reached it.
    assert requests[1].at >= reset_on_monotonic - 0.05
    [retry] = retries(capfd)
    assert (retry["source"], retry["attempt"], retry["reason"]) == (SOURCE, 1, "HTTP 429")
    assert 0.8 <= retry["wait_seconds"] <= 1.0  # the reset time, not the millisecond backoff


def test_429_asking_for_longer_than_the_retry_budget_fails_at_once(
    app, coingecko, run_etl, loaded_once, capfd
):
    app.config["API_RETRY_BUDGET_SECONDS"] = 5.0
    coingecko.fail_next(Fault(429, headers={"Retry-After": "60"}))
    started = time.monotonic()

    run = run_etl(SOURCE)[SOURCE]

    assert time.monotonic() - started < 5
    assert_failed_untouched(run, loaded_once, "page 1: gave up after 1 attempts in ")
    assert run.error.endswith(": HTTP 429")
    assert len(coingecko.page_requests()) == 2  # the first run's page, then the 429
    assert retries(capfd) == []


def test_500_502_503_are_retried_then_the_run_succeeds(app, coingecko, run_etl, capfd):
    coingecko.fail_next(Fault(500), Fault(502), Fault(503))

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.rows_read, run.inserted) == ("SUCCESS", 5, 15)
    assert [r.status for r in coingecko.page_requests()] == [500, 502, 503, 200]
    logged = [(e["source"], e["attempt"], e["reason"]) for e in retries(capfd)]
    assert logged == [(SOURCE, 1, "HTTP 500"), (SOURCE, 2, "HTTP 502"), (SOURCE, 3, "HTTP 503")]


def test_a_timeout_is_retried_then_the_run_succeeds(app, coingecko, run_etl, capfd):
    app.config["API_TIMEOUT_SECONDS"] = 0.3
    coingecko.fail_next(Fault(delay=0.6))

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.rows_read, run.inserted) == ("SUCCESS", 5, 15)
    requests = coingecko.page_requests()
    assert len(requests) == 2
    assert requests[1].at - requests[0].at >= 0.3  # the client gave up waiting, then asked again
    [retry] = retries(capfd)
    assert (retry["source"], retry["attempt"], retry["reason"]) == (SOURCE, 1, "timeout")
    assert retry["wait_seconds"] <= 0.05


def closed_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_retried_to_the_cap_then_fails_leaving_the_checkpoint(
    app, run_etl, loaded_once, capfd
):
    port = closed_port()
    app.config["API_SOURCE_URL"] = f"http://127.0.0.1:{port}/api/v3/coins/markets"

    run = run_etl(SOURCE)[SOURCE]

    assert_failed_untouched(run, loaded_once, f"127.0.0.1:{port} page 1: gave up after 5 attempts")
    assert run.error.endswith(": cannot connect (ConnectionError)")
    logged = [(e["source"], e["attempt"], e["reason"]) for e in retries(capfd)]
    assert logged == [(SOURCE, n, "cannot connect (ConnectionError)") for n in range(1, 5)]


@pytest.mark.parametrize(
    ("fault", "error_part"),
    [
        (Fault(401), "page 1 answered HTTP 401"),
        (
            Fault(200, body='[{"id": "bitcoin", "current_price": 87'),
            "page 1 answered with a body that is not valid JSON",
        ),
        (
            Fault(200, body=HTML_PAGE, content_type="text/html; charset=utf-8"),
            "page 1 answered text/html; charset=utf-8, not JSON",
        ),
        (
            Fault(200, body='{"status": {"error_code": 0}}'),
            "page 1 answered with a JSON dict, not a list",
        ),
    ],
    ids=["4xx-other-than-429", "malformed-json", "html-page-with-200", "json-object-not-list"],
)
def test_an_answer_that_cannot_improve_fails_at_once_leaving_the_checkpoint(
    app, coingecko, run_etl, loaded_once, capfd, fault, error_part
):
    coingecko.fail_next(fault)

    run = run_etl(SOURCE)[SOURCE]

    assert_failed_untouched(run, loaded_once, error_part)
    assert [r.status for r in coingecko.page_requests()] == [200, fault.status]
    assert retries(capfd) == []


def test_an_empty_list_succeeds_and_loads_nothing(app, coingecko, run_etl):
    coingecko.coins = []

    run = run_etl(SOURCE)[SOURCE]

    assert run.status == "SUCCESS"
    assert run.error is None
    assert (run.rows_read, run.inserted, run.rejected) == (0, 0, 0)
    assert (count(RawApiRecord), count(UnifiedRecord), count(RejectedRecord)) == (0, 0, 0)
    assert checkpoint_state() is None
    assert [r.query["page"] for r in coingecko.page_requests()] == ["1"]


def test_a_second_page_failing_after_the_first_keeps_the_first_and_is_partial(
    app, coingecko, run_etl, capfd
):
    coingecko.coins = make_coins(8)
    app.config.update(API_PER_PAGE=5)
    coingecko.fail_page(2, Fault(503))

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("PARTIAL", 5, 15, 0)
    assert run.error.startswith("stopped after page 1: ")
    assert "page 2: gave up after 5 attempts in " in run.error
    assert run.error.endswith(": HTTP 503")
    loaded = db.session.scalars(sa.select(UnifiedRecord.external_id).distinct()).all()
    assert sorted(loaded) == sorted(c["id"] for c in make_coins(5))
    assert checkpoint_state()[0] == {"last_updated": "2025-12-27T10:46:21.358Z"}
    assert [r.query["page"] for r in coingecko.page_requests()] == ["1"] + ["2"] * 5
    assert [e["attempt"] for e in retries(capfd)] == [1, 2, 3, 4]

    coingecko.clear_faults()
    resumed = run_etl(SOURCE)[SOURCE]

    assert (resumed.status, resumed.inserted, resumed.unchanged) == ("SUCCESS", 9, 5)
    assert count(UnifiedRecord) == 24


def test_numbers_sent_as_strings_are_loaded_exactly(app, coingecko, run_etl):
    coingecko.coins[0].update(
        current_price="87387.5", market_cap="1744910741787", total_volume="31377869299.25"
    )

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.inserted, run.rejected) == ("SUCCESS", 15, 0)
    values = dict(
        db.session.execute(
            sa.select(UnifiedRecord.metric, UnifiedRecord.value).where(
                UnifiedRecord.external_id == "bitcoin"
            )
        ).all()
    )
    assert values == {
        "price_usd": Decimal("87387.5"),
        "market_cap_usd": Decimal("1744910741787"),
        "volume_24h_usd": Decimal("31377869299.25"),
    }
    assert str(values["price_usd"]) == "87387.5"


def rejections() -> list[tuple[str, str]]:
    rows = db.session.execute(
        sa.select(RejectedRecord.raw_text, RejectedRecord.reason).order_by(RejectedRecord.id)
    ).all()
    return [tuple(row) for row in rows]


def test_a_coin_with_null_in_every_field_is_rejected_and_the_others_load(app, coingecko, run_etl):
    coingecko.coins[2] = dict.fromkeys(coingecko.coins[2])

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("PARTIAL", 5, 12, 1)
    [(raw_text, reason)] = rejections()
    assert reason == "coin has no id"
    assert json.loads(raw_text) == dict.fromkeys(coingecko.coins[2])
    loaded = db.session.scalars(sa.select(UnifiedRecord.external_id).distinct()).all()
    assert sorted(loaded) == ["bitcoin", "ethereum", "ripple", "solana"]


def test_values_that_are_not_coins_are_rejected_and_the_others_load(app, coingecko, run_etl):
    coingecko.coins[1:1] = ["hello", 42, {"foo": 1}]

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("PARTIAL", 8, 15, 3)
    assert run.error is None
    assert sorted(rejections()) == sorted(
        [
            ('"hello"', "not a coin object: str"),
            ("42", "not a coin object: int"),
            ('{"foo": 1}', "coin has no id"),
        ]
    )
    assert count(UnifiedRecord) == 15
