"""Whether what the API serves may have changed: a counter per writer, moved with every write.

Each writer (a source's runs, retention) moves its own counter in the transaction of its write,
so writers never wait on each other's row. The sum of the counters moves whenever any committed
write could change a response, and never otherwise.
"""

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.etl.load import insert_for
from kasparro.models import DataVersion

VERSION_CLOCK = "kasparro.version_clock"
"""Where a session carries the clock ``record_change`` tells of a change (``session.info``)."""


def record_change(session: Session, scope: str) -> None:
    """Move ``scope``'s counter in the current transaction (it commits with the write).

    The clock the session carries, if any, is told: this process's kept answers then show the
    change as soon as it commits (``kasparro.routes.kept_answers``).
    """
    insert = insert_for(session)(DataVersion).values(scope=scope, version=1)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["scope"], set_={"version": DataVersion.version + 1}
        )
    )
    clock = session.info.get(VERSION_CLOCK)
    if clock is not None:
        clock.changing(session)


def data_version(session: Session) -> int:
    """Return the sum of every writer's counter: equal sums, equal responses."""
    return session.scalar(sa.select(sa.func.coalesce(sa.func.sum(DataVersion.version), 0)))
