"""An alias stays applied whatever it races: a run between batches, or a reprocess.

Each test forces the interleaving that lost the alias: a batch takes its view of the aliases,
then an alias is added from a database session of its own before the batch writes its rows.
The alias must wait for the batch (and back-fill what it wrote), or the batch for the alias.
"""

import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.etl.aliases import AliasAdded, add_alias
from kasparro.etl.assets import CurrentResolver
from kasparro.extensions import db
from kasparro.models import UnifiedRecord
from tests.csv_files import CSV1_HEADER, write
from tests.test_maintained_counts import assert_exact

ROWS = 6
# One coin no asset names, fed by each CSV source, and the alias that resolves it to bitcoin.
FEEDS = {
    "csv1": (
        "CSV1_PATH",
        CSV1_HEADER,
        "xbt-{i},XBT Coin,1,2025-12-28T0{i}:00:00Z\n",
        ("name", "xbt coin"),
        "BTC",  # a row without a symbol takes its asset's
    ),
    "csv2": (
        "CSV2_PATH",
        "record_id,full_name,score,created_at\n",
        "xbq-{i},Unheard Of (XBQ),1{i}M,2025-12-28T0{i}:00:00Z\n",
        ("symbol", "XBQ"),
        "XBQ",
    ),
}
WAIT_SECONDS = 10


def feed(csv_paths, source: str) -> tuple[str, str]:
    """Write ``ROWS`` rows of the unknown coin to ``source``'s file; return the alias for it."""
    setting, header, line, alias, _ = FEEDS[source]
    write(csv_paths[setting], header + "".join(line.format(i=i) for i in range(ROWS)))
    return alias


def assets(source: str) -> list[tuple[str | None, str | None]]:
    """Return the asset and symbol of each of ``source``'s unified rows."""
    db.session.expire_all()
    return db.session.execute(
        sa.select(UnifiedRecord.asset_id, UnifiedRecord.symbol)
        .where(UnifiedRecord.source == source)
        .order_by(UnifiedRecord.external_id)
    ).all()


class AliasMeanwhile:
    """Add an alias from another session right after a batch's ``call``-th view of the aliases.

    The batch goes on once the alias has committed, or once it waits for a lock (PostgreSQL
    says so; SQLite cannot, so there half a second without an answer counts as waiting).
    """

    def __init__(self, engine: sa.Engine, call: int, kind: str, text: str):
        self.engine, self.call, self.kind, self.text = engine, call, kind, text
        self.calls = 0
        self.thread: threading.Thread | None = None
        self.pid: int | None = None
        self.added: AliasAdded | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def install(self, monkeypatch) -> None:
        """Wrap ``CurrentResolver.get`` so that the alias is added after the chosen view."""
        get = CurrentResolver.get

        def get_then_add(resolvers, session):
            resolver = get(resolvers, session)
            self.calls += 1
            if self.calls == self.call:
                self.thread = threading.Thread(target=self._add)
                self.thread.start()
                self._wait_until_done_or_waiting()
            return resolver

        monkeypatch.setattr(CurrentResolver, "get", get_then_add)

    def _add(self) -> None:
        try:
            with Session(self.engine) as other:
                if self.engine.dialect.name == "postgresql":
                    self.pid = other.scalar(sa.text("SELECT pg_backend_pid()"))
                    other.commit()
                self.ready.set()
                self.added = add_alias(other, "bitcoin", self.kind, self.text)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        finally:
            self.ready.set()

    def _wait_until_done_or_waiting(self) -> None:
        assert self.ready.wait(WAIT_SECONDS)
        if self.engine.dialect.name != "postgresql":
            self.thread.join(0.5)
            return
        deadline = time.monotonic() + WAIT_SECONDS
        while self.thread.is_alive() and time.monotonic() < deadline:
            with self.engine.connect() as look:  # a fresh view of the activity each time
                waiting = look.scalar(
                    sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": self.pid},
                )
            if waiting == "Lock":
                return
            time.sleep(0.02)
        assert not self.thread.is_alive(), "the alias neither committed nor waited for a lock"

    def finish(self) -> AliasAdded:
        """Wait for the alias to commit; return what adding it did."""
        assert self.thread is not None, "the batch never took a view of the aliases"
        self.thread.join(WAIT_SECONDS)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error
        return self.added


@pytest.mark.parametrize("source", list(FEEDS))
def test_an_alias_added_while_a_run_is_between_batches_resolves_that_batch(
    app, csv_paths, run_etl, monkeypatch, source
):
    kind, text = feed(csv_paths, source)
    app.config["ETL_BATCH_SIZE"] = 2
    meanwhile = AliasMeanwhile(db.engine, 2, kind, text)  # the second batch's view
    meanwhile.install(monkeypatch)

    run = run_etl(source)[source]
    added = meanwhile.finish()

    # Back-filled: the two batches it waited for, and any other that committed first.
    assert added.resolved >= 4
    assert (run.status, run.inserted) == ("SUCCESS", ROWS)
    assert assets(source) == [("bitcoin", FEEDS[source][-1])] * ROWS
    assert_exact()


@pytest.mark.parametrize("source", list(FEEDS))
def test_an_alias_added_while_a_reprocess_runs_stays_applied(
    app, csv_paths, run_etl, runner, monkeypatch, source
):
    kind, text = feed(csv_paths, source)
    run = run_etl(source)[source]
    assert run.unresolved == ROWS
    app.config["ETL_BATCH_SIZE"] = 2
    # The second batch's view: the first one's also stores the seed, a write SQLite serialises.
    meanwhile = AliasMeanwhile(db.engine, 2, kind, text)
    meanwhile.install(monkeypatch)

    done = runner.invoke(args=["etl", "reprocess", "--source", source])
    added = meanwhile.finish()

    assert done.exit_code == 0, done.output
    assert added.resolved == ROWS  # the run's rows, and the reprocess's first two batches
    assert assets(source) == [("bitcoin", FEEDS[source][-1])] * ROWS
    assert_exact()
