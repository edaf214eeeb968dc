"""A restated key never goes back in time: no commit writes a value its source has superseded.

A file may state one key twice (the same coin, metric and time), the later line correcting the
earlier one. Read again as a new generation, its earlier line must not bring the superseded
value back until the later line is read; and of two sessions writing one key, the one holding
the older statement must not overwrite the newer, whichever commits first.
"""

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.etl import pipeline
from kasparro.etl.load import upsert_unified
from kasparro.etl.runs import start_run
from kasparro.extensions import db
from kasparro.models import UnifiedRecord
from tests.csv_files import CSV1_HEADER, write
from tests.test_maintained_counts import assert_exact

# Per source: its file, header, a line of the restated key with its value, what the key is read
# as with the earlier and the later value, and a filler line.
FEEDS = {
    "csv1": (
        "CSV1_PATH",
        CSV1_HEADER,
        "kay,Kay Coin,{value},2025-12-28T00:00:00Z\n",
        ("100", "200"),
        ("100", "200"),
        "c-{i},Coin {i},{i}.{v},2025-12-28T00:00:00Z\n",
    ),
    "csv2": (
        "CSV2_PATH",
        "record_id,full_name,score,created_at\n",
        "kay,Kay Coin (KAY),{value},12/28/2025\n",
        ("$1.7T", '"1,800,000,000,000"'),
        ("1700000000000", "1800000000000"),
        "c-{i},Coin {i} (C{i}),{i}.{v}M,12/28/2025\n",
    ),
}
LINES = 8
EARLIER, LATER, EDITED = 1, 6, 4  # the key's two lines and a line edited elsewhere (0-based)


def lines_of(source: str, edited: bool = False) -> list[str]:
    """Return the file's lines: fillers, the key at EARLIER and LATER, one filler maybe edited."""
    _, header, key, values, _, filler = FEEDS[source]
    lines = [filler.format(i=i, v=5) for i in range(LINES)]
    lines[EARLIER], lines[LATER] = (key.format(value=value) for value in values)
    if edited:
        lines[EDITED] = filler.format(i=EDITED, v=75)
    return [header, *lines]


def value_of_the_key(session: Session, source: str) -> str:
    """Return the restated key's stored value, as text without trailing zeros."""
    value = session.scalar(
        sa.select(UnifiedRecord.value).where(
            UnifiedRecord.source == source, UnifiedRecord.external_id == "kay"
        )
    )
    return format(Decimal(value).normalize(), "f")


@pytest.mark.parametrize("source", list(FEEDS))
def test_a_file_read_again_never_brings_back_a_value_its_later_line_superseded(
    app, csv_paths, run_etl, monkeypatch, source
):
    path = csv_paths[FEEDS[source][0]]
    earlier, later = FEEDS[source][4]
    write(path, "".join(lines_of(source)))
    app.config["ETL_BATCH_SIZE"] = 2  # the key's two lines are batches apart
    seen: list[str] = []
    load = pipeline.BatchLoader.load

    def load_and_look(loader, raws, report):
        load(loader, raws, report)  # committed: what any reader sees now
        seen.append(value_of_the_key(db.session, source))

    monkeypatch.setattr(pipeline.BatchLoader, "load", load_and_look)
    first = run_etl(source)[source]
    assert seen == [earlier] * 3 + [later]  # read in order: the earlier line, then the later
    assert (first.inserted, first.updated) == (LINES - 1, 1)

    seen.clear()
    write(path, "".join(lines_of(source, edited=True)))  # read again: a new generation
    again = run_etl(source)[source]

    assert seen == [later] * 4
    assert (again.status, again.inserted, again.updated) == ("SUCCESS", 0, 1)  # the edited line
    assert again.unchanged == LINES - 1
    # A reprocess of both readings, in id order, brings nothing back either.
    seen.clear()
    monkeypatch.setattr(pipeline.BatchLoader, "load", load)
    done = app.test_cli_runner().invoke(args=["etl", "reprocess", "--source", source])
    assert done.exit_code == 0, done.output
    assert "updated=0" in done.output
    assert value_of_the_key(db.session, source) == later
    assert_exact()


def observation(run_id: int, raw_id: int, value: str) -> dict:
    """Return csv1's row of the restated key, as the raw row ``raw_id`` of a run states it."""
    return {
        "source": "csv1",
        "external_id": "kay",
        "asset_id": None,
        "symbol": None,
        "name": "Kay Coin",
        "metric": "price_usd",
        "value": Decimal(value),
        "currency": "USD",
        "timestamp": datetime(2025, 12, 28, tzinfo=UTC),
        "run_id": run_id,
        "raw_id": raw_id,
    }


@pytest.mark.parametrize("stored", [False, True], ids=["new-key", "stored-key"])
@pytest.mark.parametrize("newer_first", [True, False], ids=["newer-first", "older-first"])
def test_of_two_sessions_the_older_statement_never_overwrites_the_newer(app, stored, newer_first):
    engine = db.engine
    run_id = start_run(db.session, "csv1", "cli", app.config)
    if stored:
        upsert_unified(db.session, [observation(run_id, 1, "1")])
        db.session.commit()
    newer, older = observation(run_id, 20, "200"), observation(run_id, 10, "100")
    first, second = (newer, older) if newer_first else (older, newer)
    failures: list[BaseException] = []

    with Session(engine) as holder:
        upsert_unified(holder, [first])  # holds the key's row until it commits
        pid = []

        def write_second():
            try:
                with Session(engine) as other:
                    if engine.dialect.name == "postgresql":
                        pid.append(other.scalar(sa.text("SELECT pg_backend_pid()")))
                    upsert_unified(other, [second])
                    other.commit()
            except BaseException as exc:  # reported below, not lost in the thread
                failures.append(exc)

        thread = threading.Thread(target=write_second)
        if engine.dialect.name == "postgresql":
            thread.start()
            wait_for_a_lock(engine, pid, thread)  # the second waits on the first's row
            holder.commit()
        else:  # one writer at a time: the second writes once the first has committed
            holder.commit()
            thread.start()
    thread.join(10)
    assert not thread.is_alive() and not failures, failures

    db.session.expire_all()
    assert value_of_the_key(db.session, "csv1") == "200"
    assert_exact()


def wait_for_a_lock(engine: sa.Engine, pid: list[int], thread: threading.Thread) -> None:
    """Wait until the session ``pid`` names waits for a lock (PostgreSQL says so)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if pid:
            with engine.connect() as look:  # a fresh view of the activity each time
                waiting = look.scalar(
                    sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": pid[0]},
                )
            if waiting == "Lock":
                return
        assert thread.is_alive(), "the second session did not wait for the first"
        time.sleep(0.02)
    raise AssertionError("the second session never waited for a lock")
