"""Writing CSV feeds the way producers do, and reading back what the pipeline made of them."""

import os
import time

import sqlalchemy as sa

from kasparro.extensions import db
from kasparro.models import RejectedRecord, UnifiedRecord

CSV1_HEADER = "id,name,value,timestamp\n"


def write(path, text: str | bytes, mode: str = "w") -> None:
    """Write ``text`` (or bytes) to ``path`` exactly, with no newline translation."""
    data = text.encode() if isinstance(text, str) else text
    with open(path, mode.replace("b", "") + "b") as handle:
        handle.write(data)


def settle(path, seconds: float = 3600) -> None:
    """Make ``path`` look untouched for ``seconds``, longer than CSV_SETTLE_SECONDS."""
    moment = time.time() - seconds
    os.utime(path, (moment, moment))


def unified_keys(source: str) -> list[tuple]:
    """Return the natural keys and values of a source's unified rows, sorted."""
    rows = db.session.execute(
        sa.select(
            UnifiedRecord.external_id,
            UnifiedRecord.metric,
            UnifiedRecord.timestamp,
            UnifiedRecord.value,
        ).where(UnifiedRecord.source == source)
    )
    return sorted(tuple(row) for row in rows)


def loaded_values(source: str) -> dict[str, str]:
    """Return each external id's value as text (one observation per id expected)."""
    return {key[0]: str(key[3]) for key in unified_keys(source)}


def rejections(source: str) -> list[tuple[str, str]]:
    """Return (reference, reason) of a source's rejected rows, in the order they were rejected."""
    return [
        tuple(row)
        for row in db.session.execute(
            sa.select(RejectedRecord.reference, RejectedRecord.reason)
            .where(RejectedRecord.source == source)
            .order_by(RejectedRecord.id)
        )
    ]
