"""Corrections: what did not resolve is listed, and an alias resolves it, past rows included."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from kasparro.extensions import db
from kasparro.models import AssetAlias, UnifiedRecord
from tests.coingecko_imitation import make_coin
from tests.conftest import ADMIN_TOKEN
from tests.test_maintained_counts import assert_exact

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LONG_ONCE_LOWERED = "İ" * 200  # 200 characters, 400 once lower-cased: over asset_aliases.alias
# Rows whose coin the bundled feeds and the seed do not know: csv1 gives no symbol, csv2 does.
CSV1_UNKNOWN = [
    "xbt-1,XBT Coin,87000,2025-12-28T00:00:00Z",
    "xbt-2,xbt coin,87100,2025-12-28T01:00:00Z",
    "xbt-3,XBT COIN,87200,2025-12-28T02:00:00Z",
    "myst-1,Mystery,5,2025-12-28T00:00:00Z",
]
CSV2_UNKNOWN = [
    "x-1,XBT Coin (XBTC),1.7T,2025-12-28",
    "x-2,XBT Coin (XBTC),1.8T,2025-12-29",
    "m-1,Mystery (MYS),2M,2025-12-28",
    "m-2,Unheard Of (MYS),3M,2025-12-28",
]


def append(path, lines: list[str]) -> None:
    """Append ``lines`` to the CSV feed at ``path``."""
    with open(path, "a", encoding="utf-8") as feed:
        feed.writelines(line + "\n" for line in lines)


@pytest.fixture
def unknown_rows(app, csv_paths, run_etl):
    """Load the bundled feeds plus rows that resolve to no asset; return the runs."""
    append(csv_paths["CSV1_PATH"], CSV1_UNKNOWN)
    append(csv_paths["CSV2_PATH"], CSV2_UNKNOWN)
    runs = run_etl("csv1", "csv2")
    assert {run.status for run in runs.values()} <= {"SUCCESS", "PARTIAL"}
    return runs


@pytest.fixture
def admin_client(app):
    """Return a test client of an app whose admin token is set."""
    app.config["ETL_ADMIN_TOKEN"] = ADMIN_TOKEN
    return app.test_client()


def unified_rows() -> dict[tuple[str, str], tuple[str | None, str | None]]:
    """Return the (asset, symbol) of every observation dated after the bundled feeds, by key."""
    rows = db.session.execute(
        sa.select(
            UnifiedRecord.source,
            UnifiedRecord.external_id,
            UnifiedRecord.asset_id,
            UnifiedRecord.symbol,
        ).where(UnifiedRecord.timestamp >= datetime(2025, 12, 28, tzinfo=UTC))
    )
    return {(source, ext): (asset, symbol) for source, ext, asset, symbol in rows}


def observations() -> int:
    """Return how many observations the unified table holds."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(UnifiedRecord))


def groups(client, **params) -> list[tuple]:
    """Return the groups of ``GET /assets/unresolved`` as (source, name, symbol, count) tuples."""
    body = client.get("/assets/unresolved", query_string=params).get_json()
    return [(g["source"], g["name"], g["symbol"], g["observations"]) for g in body["data"]]


def test_unresolved_observations_are_grouped_by_name_and_symbol_most_frequent_first(
    client, unknown_rows
):
    body = client.get("/assets/unresolved").get_json()

    # Names are grouped as the source wrote them: three spellings of one name are three groups.
    # Among equal counts, source then name and symbol decide, in the database's collation.
    found = groups(client)
    assert found[0] == ("csv2", "XBT Coin", "XBTC", 2)
    assert [group[0] for group in found] == ["csv2", "csv1", "csv1", "csv1", "csv1", "csv2", "csv2"]
    assert set(found[1:]) == {
        ("csv1", "Mystery", None, 1),
        ("csv1", "XBT COIN", None, 1),
        ("csv1", "XBT Coin", None, 1),
        ("csv1", "xbt coin", None, 1),
        ("csv2", "Mystery", "MYS", 1),
        ("csv2", "Unheard Of", "MYS", 1),
    }
    assert body["pagination"] == {"page": 1, "page_size": 20, "total": 7, "total_pages": 1}
    assert body["unresolved_observations"] == 8
    assert body["data"][0]["latest"] == "2025-12-29T00:00:00+00:00"


def test_unresolved_groups_filter_by_source_and_page_without_repeats(client, unknown_rows):
    assert groups(client, source="csv2") == [
        ("csv2", "XBT Coin", "XBTC", 2),
        ("csv2", "Mystery", "MYS", 1),  # M before U in any collation
        ("csv2", "Unheard Of", "MYS", 1),
    ]
    pages = [groups(client, page=page, page_size=3) for page in (1, 2, 3, 4)]
    assert [len(page) for page in pages] == [3, 3, 1, 0]
    assert sum(pages, []) == groups(client)
    past_the_end = client.get("/assets/unresolved?page=9&page_size=3").get_json()
    assert past_the_end["pagination"]["total"] == 7
    assert client.get("/assets/unresolved?source=csv2").get_json()["unresolved_observations"] == 4


def test_an_alias_added_over_http_resolves_past_rows_without_duplicates(
    admin_client, unknown_rows, csv_paths, run_etl
):
    before, stored = unified_rows(), observations()

    answer = admin_client.post(
        "/assets/aliases", json={"asset_id": "bitcoin", "name": "  XBT coin "}, headers=AUTH
    )

    assert answer.status_code == 201, answer.get_json()
    added = answer.get_json()
    assert {k: added[k] for k in ("kind", "alias", "asset_id", "created", "resolved")} == {
        "kind": "name",
        "alias": "xbt coin",
        "asset_id": "bitcoin",
        "created": True,
        "resolved": 5,  # every spelling of the name, in both feeds
    }
    after = unified_rows()
    assert (after.keys(), observations()) == (before.keys(), stored)  # none added or removed
    changed = {key: value for key, value in after.items() if before[key] != value}
    assert changed == {
        ("csv1", "xbt-1"): ("bitcoin", "BTC"),  # a row without a symbol takes the asset's
        ("csv1", "xbt-2"): ("bitcoin", "BTC"),
        ("csv1", "xbt-3"): ("bitcoin", "BTC"),
        ("csv2", "x-1"): ("bitcoin", "XBTC"),  # a row's own symbol stays
        ("csv2", "x-2"): ("bitcoin", "XBTC"),
    }
    assert groups(admin_client) == [
        ("csv1", "Mystery", None, 1),
        ("csv2", "Mystery", "MYS", 1),
        ("csv2", "Unheard Of", "MYS", 1),
    ]
    assert_exact()

    # A later run resolves new rows through the alias, and restates nothing.
    append(csv_paths["CSV1_PATH"], ["xbt-4,Xbt Coin,87300,2025-12-28T03:00:00Z"])
    run = run_etl("csv1")["csv1"]
    assert (run.inserted, run.updated, run.unresolved) == (1, 0, 0)
    assert unified_rows() == {**after, ("csv1", "xbt-4"): ("bitcoin", "BTC")}
    assert observations() == stored + 1
    assert_exact()

    again = admin_client.post(
        "/assets/aliases", json={"asset_id": "bitcoin", "name": "XBT Coin"}, headers=AUTH
    )
    assert again.status_code == 200
    assert (again.get_json()["created"], again.get_json()["resolved"]) == (False, 0)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AssetAlias)) == 1


def test_a_symbol_alias_added_from_the_cli_resolves_rows_whose_name_does_not(runner, unknown_rows):
    done = runner.invoke(args=["assets", "alias", "add", "--asset", "ethereum", "--symbol", "mys"])

    assert done.exit_code == 0, done.output
    assert "symbol alias 'mys' -> ethereum: added; 2 past observations resolved" in done.output
    rows = unified_rows()
    assert rows[("csv2", "m-1")] == rows[("csv2", "m-2")] == ("ethereum", "MYS")
    assert rows[("csv1", "myst-1")] == (None, None)  # a name alone: the symbol alias is not it
    assert_exact()

    listed = runner.invoke(args=["assets", "alias", "list"])
    assert listed.exit_code == 0
    assert listed.output.split() == ["symbol", "'mys'", "->", "ethereum"]
    unresolved = runner.invoke(args=["assets", "unresolved", "--source", "csv1"])
    assert unresolved.exit_code == 0
    lines = unresolved.output.splitlines()
    assert lines[0] == "4 observations did not resolve, in 4 groups"
    assert sorted(line.split()[2] for line in lines[1:]) == [
        "name='Mystery'",
        "name='XBT",
        "name='XBT",
        "name='xbt",
    ]


def test_a_ticker_two_coins_share_resolves_only_through_an_alias(
    admin_client, coingecko, csv_paths, run_etl
):
    coingecko.coins = [
        make_coin("uniswap", "uni", "Uniswap", 6.1, 3_800_000_000, 1, 1),
        make_coin("universe-token", "uni", "Universe", 0.01, 1_000_000, 1, 2),
    ]
    append(
        csv_paths["CSV2_PATH"],
        ["u-1,Some Other Name (UNI),5M,2025-12-28", "u-2,Universe (UNI),1M,2025-12-28"],
    )
    run_etl("coingecko_api", "csv2")
    assert unified_rows()[("csv2", "u-1")] == (None, "UNI")

    answer = admin_client.post(
        "/assets/aliases", json={"asset_id": "uniswap", "symbol": "UNI"}, headers=AUTH
    )

    assert answer.status_code == 201
    assert answer.get_json()["resolved"] == 1
    rows = unified_rows()
    assert rows[("csv2", "u-1")] == ("uniswap", "UNI")
    assert rows[("csv2", "u-2")] == ("universe-token", "UNI")  # its name still decides
    assert_exact()


@pytest.mark.parametrize(
    ("headers", "body", "status", "says"),
    [
        pytest.param({}, {"asset_id": "bitcoin", "name": "x"}, 401, "Bearer", id="no-token"),
        pytest.param(
            {"Authorization": "Bearer wrong"},
            {"asset_id": "bitcoin", "name": "x"},
            403,
            "not valid",
            id="bad-token",
        ),
        pytest.param(
            AUTH, {"asset_id": "no-such-coin", "name": "x"}, 404, "no-such-coin", id="asset"
        ),
        pytest.param(AUTH, {"asset_id": "bitcoin", "name": "Ethereum"}, 409, "ethereum", id="name"),
        pytest.param(AUTH, {"asset_id": "bitcoin", "symbol": "eth"}, 409, "ethereum", id="symbol"),
        pytest.param(AUTH, {"asset_id": "ethereum", "name": "XBT"}, 409, "bitcoin", id="taken"),
        pytest.param(
            AUTH, {"asset_id": "bitcoin", "name": "a", "symbol": "b"}, 422, "exactly", id="both"
        ),
        pytest.param(AUTH, {"asset_id": "bitcoin"}, 422, "exactly", id="neither"),
        pytest.param(AUTH, {"asset_id": "bitcoin", "name": "   "}, 422, "blank", id="blank"),
        pytest.param(AUTH, {"name": "x"}, 422, "asset_id", id="no-asset"),
        pytest.param(AUTH, {"asset_id": "bitcoin", "name": 5}, 422, "name", id="not-text"),
        pytest.param(
            AUTH, {"asset_id": "bitcoin", "name": LONG_ONCE_LOWERED}, 422, "lower", id="lowered"
        ),
    ],
)
def test_adding_an_alias_over_http_is_refused_with_the_reason(
    admin_client, run_etl, headers, body, status, says
):
    run_etl("csv1")  # the seed assets
    assert (
        admin_client.post(
            "/assets/aliases", json={"asset_id": "bitcoin", "name": "XBT"}, headers=AUTH
        ).status_code
        == 201
    )

    answer = admin_client.post("/assets/aliases", json=body, headers=headers)

    assert answer.status_code == status
    assert says in answer.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AssetAlias)) == 1


def test_the_alias_list_pages_oldest_first_and_filters_by_asset(admin_client, run_etl):
    run_etl("csv1")
    for asset, name in [("bitcoin", "xbt"), ("ethereum", "ether"), ("bitcoin", "digital gold")]:
        added = admin_client.post(
            "/assets/aliases", json={"asset_id": asset, "name": name}, headers=AUTH
        )
        assert added.status_code == 201

    first = admin_client.get("/assets/aliases?page_size=2").get_json()
    second = admin_client.get("/assets/aliases?page_size=2&page=2").get_json()
    mine = admin_client.get("/assets/aliases?asset=Bitcoin").get_json()

    assert [a["alias"] for a in first["data"]] == ["xbt", "ether"]
    assert first["next_page"] == 2
    assert ([a["alias"] for a in second["data"]], second["next_page"]) == (["digital gold"], None)
    assert [a["alias"] for a in mine["data"]] == ["xbt", "digital gold"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--asset", "no-such-coin", "--name", "x"], "no asset has the id 'no-such-coin'"),
        (["--asset", "bitcoin", "--name", "Ethereum"], "already means 'ethereum'"),
        (["--asset", "bitcoin", "--name", "x", "--symbol", "y"], "exactly one of"),
        (["--asset", "bitcoin"], "exactly one of"),
        (["--asset", "bitcoin", "--symbol", "  "], "the symbol is empty"),
        (
            ["--asset", "bitcoin", "--name", LONG_ONCE_LOWERED],
            "the name is longer than 200 characters once lower-cased (400)",
        ),
    ],
)
def test_adding_an_alias_from_the_cli_is_refused_with_the_reason(runner, run_etl, args, says):
    run_etl("csv1")

    done = runner.invoke(args=["assets", "alias", "add", *args])

    assert done.exit_code != 0
    assert says in done.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AssetAlias)) == 0


def test_a_name_too_long_once_lower_cased_is_refused_naming_the_field(admin_client, run_etl):
    run_etl("csv1")

    answer = admin_client.post(
        "/assets/aliases", json={"asset_id": "bitcoin", "name": LONG_ONCE_LOWERED}, headers=AUTH
    )

    assert answer.status_code == 422
    assert answer.get_json()["errors"]["json"] == {
        "name": ["is longer than 200 characters once lower-cased (400)"]
    }
    fits = admin_client.post(
        "/assets/aliases", json={"asset_id": "bitcoin", "name": "İ" * 100}, headers=AUTH
    )
    assert fits.status_code == 201
    assert fits.get_json()["alias"] == "İ".lower() * 100
