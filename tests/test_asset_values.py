"""An asset's latest value per source and metric, and the consensus across sources."""

from decimal import Decimal

import pytest
import sqlalchemy as sa

from kasparro.extensions import db
from kasparro.models import UnifiedRecord
from kasparro.read.values import consensus, latest_values


@pytest.mark.parametrize(
    ("values", "median", "spread"),
    [
        (["100"], "100", None),
        (["100", "100"], "100", 0.0),
        (["99", "101"], "100", 2.0),
        (["90", "100", "130"], "100", 40.0),
        (["1", "2", "3", "10"], "2.5", 360.0),
    ],
)
def test_consensus_is_the_median_and_the_range_as_a_share_of_it(values, median, spread):
    agreed = consensus([Decimal(v) for v in values])

    assert agreed.median == Decimal(median)
    assert agreed.spread_percent == (spread if spread is None else pytest.approx(spread))
    assert (agreed.low, agreed.high) == (min(map(Decimal, values)), max(map(Decimal, values)))
    assert agreed.sources == len(values)


def test_consensus_of_nothing_is_none_and_a_zero_median_has_no_spread():
    assert consensus([]) is None
    assert consensus([Decimal("-1"), Decimal("0"), Decimal("1")]).spread_percent is None


def test_latest_values_are_the_newest_observation_of_each_source_and_metric(app, run_etl):
    run_etl("csv1", "csv2", "coingecko_api")
    newest = {}
    for row in db.session.execute(
        sa.select(UnifiedRecord).where(UnifiedRecord.asset_id == "bitcoin")
    ).scalars():
        key = (row.source, row.metric)
        if key not in newest or (row.timestamp, row.id) > newest[key][:2]:
            newest[key] = (row.timestamp, row.id, row.value)

    latest = latest_values(db.session, "bitcoin")

    assert len({v.source for v in latest}) >= 2
    assert {(v.source, v.metric): (v.timestamp, v.value) for v in latest} == {
        key: (timestamp, value) for key, (timestamp, _, value) in newest.items()
    }
    assert latest_values(db.session, "bitcoin", ["price_usd"]) == [
        v for v in latest if v.metric == "price_usd"
    ]
    assert latest_values(db.session, "no-such-coin") == []
