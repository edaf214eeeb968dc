"""Answers are kept until an ETL or retention commit may change them, and never served stale."""

import pickle
import time
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from kasparro import create_app
from kasparro.etl.pipeline import ingest
from kasparro.etl.retention import apply_retention
from kasparro.etl.runs import fail_run, start_run
from kasparro.etl.versions import record_change
from kasparro.extensions import db, kept
from kasparro.models import DataVersion, UnifiedRecord
from kasparro.routes.kept_answers import VERSION_READ_SECONDS
from kasparro.schemas.data import DataQuerySchema
from tests.csv_files import write

APPENDED = "solana,Solana,122.1,2025-12-28T00:00:00Z\ncardano,Cardano,0.36,2025-12-28T00:00:00Z\n"
CACHED = [
    "/data?page_size=5",
    "/data?source=csv1&metric=price_usd&page_size=3",
    "/stats",
    "/health",
]


@contextmanager
def statements():
    """Collect the SQL statements the app's engine runs meanwhile."""
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)


def body(client, url: str) -> dict:
    """Return the JSON body of a GET, without its per-request "meta"."""
    response = client.get(url)
    assert response.status_code == 200, response.get_json()
    return {key: value for key, value in response.get_json().items() if key != "meta"}


@pytest.mark.parametrize("url", CACHED)
def test_repeated_requests_read_the_data_version_at_most_once_an_interval(client, run_etl, url):
    run_etl("csv1", "csv2")
    first = body(client, url)

    started = time.monotonic()
    with statements() as seen:
        answers = [body(client, url) for _ in range(20)]
    elapsed = time.monotonic() - started

    assert all(answer == first for answer in answers)
    assert all("data_versions" in statement for statement in seen)
    assert len(seen) <= elapsed / VERSION_READ_SECONDS + 1


@pytest.mark.parametrize("url", CACHED)
def test_a_request_after_the_interval_reads_only_the_data_version(client, run_etl, url):
    run_etl("csv1", "csv2")
    first = body(client, url)
    time.sleep(VERSION_READ_SECONDS)

    with statements() as seen:
        again = body(client, url)

    assert again == first
    assert len(seen) == 1 and "data_versions" in seen[0]


def set_value_to_one(connection, record_id: int) -> None:
    """Change one observation's value and move the data version, as another process's ETL would."""
    connection.execute(
        sa.update(UnifiedRecord).where(UnifiedRecord.id == record_id).values(value=1)
    )
    connection.execute(sa.update(DataVersion).values(version=DataVersion.version + 1))


def test_a_commit_made_by_this_process_shows_at_once(client, run_etl):
    run_etl("csv1")
    before = body(client, CACHED[0])["data"][0]

    db.session.execute(
        sa.update(UnifiedRecord).where(UnifiedRecord.id == before["id"]).values(value=1)
    )
    record_change(db.session, "tests")  # as the ETL does
    db.session.commit()

    assert before["value"] != "1"
    assert body(client, CACHED[0])["data"][0]["value"] == "1"


def test_a_commit_made_elsewhere_shows_once_the_version_interval_has_passed(client, run_etl):
    """Another process's commit, here one made outside every session of this process."""
    run_etl("csv1")
    before = body(client, CACHED[0])["data"][0]

    with db.engine.begin() as connection:  # no session: this process's sessions do not see it
        set_value_to_one(connection, before["id"])
    time.sleep(VERSION_READ_SECONDS)

    assert before["value"] != "1"
    assert body(client, CACHED[0])["data"][0]["value"] == "1"


def test_each_answer_keeps_its_own_request_id(client, run_etl):
    run_etl("csv1")
    answers = [client.get(CACHED[0], headers={"X-Request-ID": f"r-{n}"}) for n in range(3)]
    ids = {answer.get_json()["meta"]["request_id"] for answer in answers}

    assert ids == {"r-0", "r-1", "r-2"}


@pytest.mark.parametrize("url", CACHED)
def test_a_run_that_loads_rows_makes_the_next_answer_fresh(client, run_etl, csv_paths, url):
    run_etl("csv1")
    before = body(client, url)
    write(csv_paths["CSV1_PATH"], APPENDED, mode="a")

    run_etl("csv1")
    after = body(client, url)

    assert after != before
    if url.startswith("/data"):
        assert after["pagination"]["total"] == before["pagination"]["total"] + 2
    elif url == "/stats":
        assert after["total_records"] == before["total_records"] + 2
    else:
        assert after["last_etl_run"]["records_processed"] == 2


def test_a_run_that_changes_nothing_still_refreshes_the_run_history(client, run_etl):
    run_etl("csv1")
    before = body(client, "/stats")

    run_etl("csv1")

    assert body(client, "/stats")["sources"]["csv1"]["run_counts"] == {"SUCCESS": 2}
    assert before["sources"]["csv1"]["run_counts"] == {"SUCCESS": 1}


def test_a_retention_pass_that_deletes_observations_makes_the_next_page_fresh(app, client, run_etl):
    run_etl("csv1")  # its observations are of December 2025: past a week's age
    before = body(client, CACHED[0])["pagination"]["total"]

    apply_retention(db.session, {**app.config, "RETENTION_UNIFIED_DAYS": 7})

    assert before > 0
    assert body(client, CACHED[0])["pagination"]["total"] == 0


def test_another_process_sees_a_commit_made_elsewhere(settings, client, run_etl, csv_paths):
    run_etl("csv1")
    before = body(client, CACHED[0])
    write(csv_paths["CSV1_PATH"], APPENDED, mode="a")
    other = create_app(dict(settings))  # another gunicorn worker, say, with a cache of its own
    with other.app_context():
        other.test_cli_runner().invoke(args=["etl", "run", "--source", "csv1"])
        db.session.remove()
        db.engine.dispose()
    time.sleep(VERSION_READ_SECONDS)  # its clock is its own: this one reads the version again

    assert body(client, CACHED[0])["pagination"]["total"] == before["pagination"]["total"] + 2


def test_no_answer_is_kept_when_the_cache_is_off(settings, run_etl):
    application = create_app({**settings, "RESPONSE_CACHE_ENTRIES": 0})
    with application.app_context():
        run_etl("csv1")
        client = application.test_client()
        body(client, CACHED[0])
        with statements() as seen:
            body(client, CACHED[0])
        db.session.remove()
        db.engine.dispose()

    assert any("unified_records" in statement for statement in seen)


def test_each_committed_batch_of_a_run_in_progress_is_seen(app, client):
    run_id = start_run(db.session, "csv1", "cli", app.config)
    assert body(client, "/stats")["sources"]["csv1"]["records_processed"] == 0

    ingest(db.session, run_id, app.config)  # raw rows, committed batch by batch

    assert body(client, "/stats")["sources"]["csv1"]["records_processed"] == 14


def test_a_run_closed_without_a_batch_is_seen(app, client):
    run_id = start_run(db.session, "csv1", "cli", app.config)
    assert body(client, "/stats")["sources"]["csv1"]["last_status"] == "RUNNING"

    fail_run(db.session, run_id, RuntimeError("stopped"))

    assert body(client, "/stats")["sources"]["csv1"]["last_status"] == "FAILED"


def test_health_shows_a_run_that_failed_at_once(app, client):
    run_id = start_run(db.session, "csv1", "cli", app.config)
    assert body(client, "/health")["sources"]["csv1"]["status"] == "RUNNING"

    fail_run(db.session, run_id, RuntimeError("stopped"))

    health = body(client, "/health")
    assert (health["status"], health["sources"]["csv1"]["status"]) == ("degraded", "FAILED")


def test_a_write_made_outside_the_etl_shows_once_the_kept_answer_expires(settings, run_etl):
    application = create_app({**settings, "RESPONSE_CACHE_SECONDS": 1})
    with application.app_context():
        run_etl("csv1")
        client = application.test_client()
        before = body(client, CACHED[0])["data"][0]
        db.session.execute(
            sa.update(UnifiedRecord).where(UnifiedRecord.id == before["id"]).values(value=1)
        )
        db.session.commit()  # by hand: no counter moves
        time.sleep(2.1)  # the cache counts whole seconds

        after = body(client, CACHED[0])["data"][0]
        db.session.remove()
        db.engine.dispose()

    assert before["value"] != "1" and after["value"] == "1"


@pytest.mark.parametrize(("url", "has_meta"), [("/data?page_size=5", True), ("/stats", False)])
def test_an_answer_is_kept_as_its_json_text_and_served_with_its_own_meta(
    client, run_etl, url, has_meta
):
    run_etl("csv1")
    first = client.get(url, headers={"X-Request-ID": "first"})
    second = client.get(url, headers={"X-Request-ID": "second"})

    stored = [value for value in kept.cache._cache.values()]  # SimpleCache: (expiry, pickled)
    assert any(isinstance(pickle.loads(value), str) for _, value in stored)
    assert first.mimetype == second.mimetype == "application/json"
    one, two = first.get_json(), second.get_json()
    if has_meta:
        assert one.pop("meta")["request_id"] == "first"
        assert two.pop("meta")["request_id"] == "second"
    assert "meta" not in one and "meta" not in two
    assert one == two


def test_a_kept_page_is_served_without_reading_its_arguments_again(client, run_etl, monkeypatch):
    run_etl("csv1")
    reads = []
    load = DataQuerySchema.load

    def counted(schema, *args, **kwargs):
        reads.append(kwargs)
        return load(schema, *args, **kwargs)

    monkeypatch.setattr(DataQuerySchema, "load", counted)
    first = client.get("/data?page_size=3&source=csv1", headers={"X-Request-ID": "one"})
    again = client.get("/data?page_size=3&source=csv1", headers={"X-Request-ID": "two"})

    assert len(reads) == 1
    assert again.get_json()["data"] == first.get_json()["data"]
    assert again.get_json()["meta"]["request_id"] == "two"
    # A URL whose arguments are wrong is never kept: each request reads them, and is refused.
    assert [client.get("/data?page_size=0").status_code for _ in range(2)] == [422, 422]
    assert len(reads) == 3


@pytest.mark.parametrize("url", ["/stats", "/assets?page_size=3", "/anomalies", "/health"])
def test_a_kept_answer_is_byte_for_byte_the_one_first_sent(client, run_etl, url):
    run_etl("csv1", "csv2")
    first = client.get(url)
    again = [client.get(url) for _ in range(2)]

    assert first.status_code == 200
    assert all(answer.data == first.data for answer in again)
    assert first.data.endswith(b"}\n") and b"\n" not in first.data[:-1]
