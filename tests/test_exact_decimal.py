"""Every writer stores an exact decimal in its one canonical text, on both engines.

``parse_amount`` gives canonical values to the ETL; the column type itself canonicalises what any
other writer binds (a correction, a script, a future source), so the two engines never hold the
same number as different texts.
"""

from decimal import Decimal

import pytest
import sqlalchemy as sa

from kasparro.db_types import canonical_text, utcnow
from kasparro.extensions import db
from kasparro.models import EtlRun, UnifiedRecord

BOUND_AND_STORED = {
    "coin-a": (Decimal("1.50"), "1.5"),
    "coin-b": (Decimal("1E+3"), "1000"),
    "coin-c": (Decimal("-0.000"), "0"),
    "coin-d": (Decimal("1700000000000.00"), "1700000000000"),
    "coin-e": (Decimal("0.000000000000000000000000000000000000001000"), "0." + "0" * 38 + "1"),
}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("100.0"), "100"),
        (Decimal("1E+2"), "100"),
        (Decimal("0.10"), "0.1"),
        (Decimal("-0"), "0"),
        (Decimal("-1.250"), "-1.25"),
        (Decimal("12"), "12"),
    ],
)
def test_canonical_text_writes_one_text_per_number(value, text):
    assert canonical_text(value) == text


def test_a_value_bound_by_any_writer_is_stored_in_its_canonical_text(app):
    run = EtlRun(source="csv1", status="SUCCESS", trigger="cli", started_at=utcnow())
    db.session.add(run)
    db.session.flush()
    now = utcnow()
    db.session.add_all(
        UnifiedRecord(
            source="csv1",
            external_id=external_id,
            metric="price_usd",
            value=value,
            currency="USD",
            timestamp=now,
            ingested_at=now,
            run_id=run.id,
        )
        for external_id, (value, _) in BOUND_AND_STORED.items()
    )
    db.session.commit()

    rows = db.session.execute(
        sa.text("SELECT external_id, CAST(value AS TEXT) FROM unified_records")
    ).tuples()
    assert dict(rows.all()) == {key: text for key, (_, text) in BOUND_AND_STORED.items()}
    served = db.session.scalars(sa.select(UnifiedRecord).order_by(UnifiedRecord.external_id))
    assert [format(record.value, "f") for record in served] == [
        t for _, t in BOUND_AND_STORED.values()
    ]
