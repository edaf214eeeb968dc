"""An alias decides only what resolves to no single asset without it; it never moves a coin."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from kasparro.etl import pipeline
from kasparro.etl.aliases import add_alias
from kasparro.etl.assets import AssetResolver
from kasparro.extensions import db
from kasparro.models import UnifiedRecord
from tests.coingecko_imitation import make_coin
from tests.conftest import ADMIN_TOKEN
from tests.csv_files import CSV1_HEADER, write
from tests.test_maintained_counts import assert_exact

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Two coins share a name; two others share a name, and one of them a ticker with a third coin.
COINS = [
    make_coin("wrapped-bitcoin", "wbtc", "Wrapped Bitcoin", 87000, 10_000_000_000, 1, 1),
    make_coin("wrapped-bitcoin-celer", "cwbtc", "Wrapped Bitcoin", 86000, 1_000_000, 1, 2),
    make_coin("alpha-one", "alp", "Twin", 1, 1_000_000, 1, 3),
    make_coin("beta-two", "bet", "Twin", 2, 1_000_000, 1, 4),
    make_coin("delta", "alp", "Delta Coin", 3, 1_000_000, 1, 5),
]
# csv2 rows (name and ticker as "Name (TICKER)"), what each resolves to before the aliases, after.
ROWS = {
    "w-1": ("Wrapped Bitcoin (CWBTC)", "wrapped-bitcoin-celer", "wrapped-bitcoin-celer"),
    "w-2": ("Wrapped Bitcoin (WBTC)", "wrapped-bitcoin", "wrapped-bitcoin"),
    "w-3": ("Wrapped Bitcoin", None, "wrapped-bitcoin"),  # an ambiguous name settled
    "w-4": ("wrapped bitcoin (XYZ)", None, "wrapped-bitcoin"),  # no holder has XYZ: ambiguous
    "t-1": ("Twin (ALP)", "alpha-one", "alpha-one"),  # the name narrowed by the ticker
    "t-2": ("Twin (BET)", "beta-two", "beta-two"),
    "t-3": ("Unheard Of (ALP)", None, "delta"),  # a shared ticker settled
    "t-4": ("Twin (ZZZ)", None, None),  # no alias speaks of it
    "t-5": ("Delta Coin (ALP)", "delta", "delta"),
}
ALIASES = [
    ({"asset_id": "wrapped-bitcoin", "name": "Wrapped Bitcoin"}, 2),
    ({"asset_id": "delta", "symbol": "ALP"}, 1),
]


def csv2_lines(suffix: str, day: int) -> str:
    """Return ``ROWS`` as csv2 lines, their ids ending in ``suffix``, dated December ``day``."""
    return "".join(f"{key}{suffix},{text},1M,2025-12-{day}\n" for key, (text, *_) in ROWS.items())


def assets_of(suffix: str) -> dict[str, str | None]:
    """Return the asset of each csv2 row whose id ends in ``suffix``, by its ``ROWS`` key."""
    rows = db.session.execute(
        sa.select(UnifiedRecord.external_id, UnifiedRecord.asset_id).where(
            UnifiedRecord.source == "csv2",
            UnifiedRecord.timestamp >= datetime(2025, 12, 28, tzinfo=UTC),
        )
    )
    return {ext.removesuffix(suffix): asset for ext, asset in rows if ext.endswith(suffix)}


@pytest.fixture
def admin_client(app):
    """Return a test client of an app whose admin token is set."""
    app.config["ETL_ADMIN_TOKEN"] = ADMIN_TOKEN
    return app.test_client()


def test_an_alias_decides_only_where_the_assets_give_no_single_answer(
    admin_client, coingecko, csv_paths, run_etl, runner
):
    coingecko.coins = COINS
    write(csv_paths["CSV2_PATH"], csv2_lines("-first", 28), mode="a")
    run_etl("coingecko_api", "csv2")
    assert assets_of("-first") == {key: before for key, (_, before, _) in ROWS.items()}

    for body, resolved in ALIASES:
        answer = admin_client.post("/assets/aliases", json=body, headers=AUTH)
        assert answer.status_code == 201, answer.get_json()
        assert answer.get_json()["resolved"] == resolved

    after = {key: later for key, (_, _, later) in ROWS.items()}
    assert assets_of("-first") == after  # the back-fill moved no row that resolved
    assert_exact()
    # A later run resolves the same coins the same way, and a reprocess moves nothing.
    write(csv_paths["CSV2_PATH"], csv2_lines("-later", 29), mode="a")
    later = run_etl("csv2")["csv2"]
    assert later.unresolved == 1
    assert assets_of("-later") == after
    done = runner.invoke(args=["etl", "reprocess", "--source", "csv2"])
    assert done.exit_code == 0, done.output
    assert "updated=0" in done.output
    assert assets_of("-first") == after
    assert assets_of("-later") == after

    # The name is an alias of one asset now: another asset cannot take it.
    taken = admin_client.post(
        "/assets/aliases",
        json={"asset_id": "wrapped-bitcoin-celer", "name": "wrapped bitcoin"},
        headers=AUTH,
    )
    assert taken.status_code == 409
    assert "wrapped-bitcoin" in taken.get_json()["errors"]["json"]["name"][0]


RESOLVER_ASSETS = [
    ("uniswap", "uni", "Uniswap"),
    ("universe-token", "uni", "Universe"),
    ("bar", "bar", "Bar"),
    ("wrapped-x", "wx", "Wrapped"),
    ("wrapped-y", "wy", "Wrapped"),
]


@pytest.mark.parametrize(
    ("aliases", "observation", "expected"),
    [
        pytest.param(
            [("symbol", "uni", "uniswap"), ("name", "foo", "bar")], ("Foo", "UNI"), "uniswap",
            id="the-older-symbol-alias-decides",
        ),
        pytest.param(
            [("name", "foo", "bar"), ("symbol", "uni", "uniswap")], ("Foo", "UNI"), "bar",
            id="the-older-name-alias-decides",
        ),
        pytest.param(
            [("symbol", "uni", "uniswap")], ("Wrapped", "UNI"), None,
            id="a-symbol-alias-never-contradicts-a-known-name",
        ),
        pytest.param(
            [("symbol", "wy", "wrapped-x")], ("Wrapped", "WY"), "wrapped-y",
            id="a-narrowed-name-outranks-a-symbol-alias",
        ),
        pytest.param(
            [("symbol", "zz", "wrapped-x")], ("Wrapped", "ZZ"), "wrapped-x",
            id="a-symbol-alias-settles-a-shared-name-among-its-holders",
        ),
    ],
)  # fmt: skip
def test_where_aliases_disagree_the_older_decides_and_a_name_bounds_a_symbol_alias(
    aliases, observation, expected
):
    assert AssetResolver(RESOLVER_ASSETS, aliases).identify(*observation) == expected


def test_an_alias_added_while_a_run_loads_resolves_the_runs_later_batches(
    app, csv_paths, run_etl, monkeypatch
):
    write(
        csv_paths["CSV1_PATH"],
        CSV1_HEADER + "".join(f"xbt-{i},XBT Coin,1,2025-12-28T0{i}:00:00Z\n" for i in range(6)),
    )
    app.config["ETL_BATCH_SIZE"] = 2
    load, added = pipeline.BatchLoader.load, []

    def load_then_add_an_alias(loader, raws, report):
        load(loader, raws, report)
        if not added:  # after the run's first batch, from a connection of its own
            with Session(db.engine) as other:  # the first batch stored the seed: bitcoin
                added.append(add_alias(other, "bitcoin", "name", "xbt coin"))

    monkeypatch.setattr(pipeline.BatchLoader, "load", load_then_add_an_alias)

    run = run_etl("csv1")["csv1"]

    assert added[0].resolved == 2  # the first batch's rows, back-filled
    assert (run.status, run.inserted, run.unresolved) == ("SUCCESS", 6, 2)
    assets = db.session.scalars(
        sa.select(UnifiedRecord.asset_id).where(UnifiedRecord.external_id.like("xbt-%"))
    ).all()
    assert assets == ["bitcoin"] * 6
    assert_exact()


@pytest.mark.parametrize(
    ("kind", "text"), [("name", "Mystery"), ("symbol", "ALP")], ids=["name", "symbol"]
)
def test_a_back_fill_moves_no_row_that_resolved_without_the_alias(
    coingecko, csv_paths, run_etl, kind, text
):
    coingecko.coins = COINS
    # csv1 names its coin by id: delta, ticker ALP, whatever the name. csv2 gives the same name
    # and ticker, which no asset settles: ALP is two coins', and no asset is called Mystery.
    write(csv_paths["CSV1_PATH"], "delta,Mystery,3,2025-12-28T00:00:00Z\n", mode="a")
    write(csv_paths["CSV2_PATH"], "m-1,Mystery (ALP),1M,2025-12-28T00:00:00Z\n", mode="a")
    run_etl("coingecko_api", "csv1", "csv2")
    mystery = sa.select(UnifiedRecord.source, UnifiedRecord.asset_id, UnifiedRecord.symbol).where(
        UnifiedRecord.name == "Mystery"
    )
    assert sorted(db.session.execute(mystery).all()) == [
        ("csv1", "delta", "ALP"),
        ("csv2", None, "ALP"),
    ]

    added = add_alias(db.session, "alpha-one", kind, text)

    assert added.resolved == 1
    db.session.expire_all()
    assert sorted(db.session.execute(mystery).all()) == [
        ("csv1", "delta", "ALP"),  # resolved by its id, it keeps its asset
        ("csv2", "alpha-one", "ALP"),
    ]
    assert_exact()
