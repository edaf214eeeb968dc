"""Schema drift on all three sources: renamed, re-cased, missing, extra and re-ordered fields.

Documented outcomes (SCHEMA_DRIFT_THRESHOLD, default 0.8):

- a field renamed with confidence at or above the threshold is mapped, the rows load, and a
  ``renamed`` event is recorded;
- a field whose closest candidate is below the threshold stays missing: every row that needs it
  is rejected with the reason, the run is PARTIAL, and a ``missing`` event is recorded;
- a field nobody expected is recorded as ``unexpected`` and the rows load;
- re-ordered CSV columns are recorded as ``reordered`` and the values are taken by name.

Every event is on the run (``details["drift"]``, shown by ``GET /runs/<id>``) and logged as the
warning ``etl.schema_drift``.
"""

import json

import pytest
import sqlalchemy as sa

from kasparro.config import load_settings
from kasparro.etl.drift import RECASED_CONFIDENCE, FieldMap, match_fields, normalise, similarity
from kasparro.extensions import db
from kasparro.models import RawApiRecord, UnifiedRecord
from tests.coingecko_imitation import make_coins
from tests.csv_files import rejections

CSV1_ROWS = [
    ("bitcoin", "Bitcoin", "87387.00", "2025-12-27T10:46:21Z"),
    ("ethereum", "Ethereum", "2922.48", "2025-12-27T10:46:21Z"),
    ("tether", "Tether", "0.999512", "2025-12-27T10:46:21Z"),
]
CSV1_COLUMNS = ("id", "name", "value", "timestamp")
CSV2_ROWS = [
    ("mc-0001", "Bitcoin (BTC)", "$1.74T", "2025-12-27T10:46:21Z"),
    ("mc-0002", "Ethereum (ETH)", "352547418866", "2025-12-27T10:46:00Z"),
]
CSV2_COLUMNS = ("record_id", "full_name", "score", "created_at")


# ---------------------------------------------------------------------------------------------
# Helpers


def write_csv(path, header: list[str], rows: list[tuple[str, ...]]) -> None:
    """Write ``rows`` under ``header``; each row's fields follow the header's order."""
    lines = [",".join(header), *(",".join(row) for row in rows)]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("\n".join(lines) + "\n")


def csv1_rows_in(order: list[str]) -> list[tuple[str, ...]]:
    """Return the csv1 rows with their fields in the order of ``order`` (expected names)."""
    return [
        tuple(dict(zip(CSV1_COLUMNS, row, strict=True))[name] for name in order)
        for row in CSV1_ROWS
    ]


def unified(source: str, metric: str | None = None) -> dict[str, str]:
    """Return ``{external_id: value}`` of a source's unified rows (one metric)."""
    query = sa.select(UnifiedRecord.external_id, UnifiedRecord.value).where(
        UnifiedRecord.source == source
    )
    if metric:
        query = query.where(UnifiedRecord.metric == metric)
    return {external_id: str(value) for external_id, value in db.session.execute(query)}


def drift_of(client, run) -> list[dict]:
    """Return the drift events ``GET /runs/<id>`` shows, checking they match the stored run."""
    response = client.get(f"/runs/{run.id}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["details"] == run.details
    return (body["details"] or {}).get("drift", [])


def logged_drift(capfd) -> list[dict]:
    """Return the ``etl.schema_drift`` log lines written so far, as dicts."""
    captured = capfd.readouterr()
    events = []
    for line in (captured.out + captured.err).splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("event") == "etl.schema_drift":
            events.append(entry)
    return events


def assert_logged(capfd, run, events: list[dict]) -> None:
    """Assert each drift event was logged as a warning naming the run and the source."""
    logged = logged_drift(capfd)
    assert len(logged) == len(events)
    for entry, event in zip(logged, events, strict=True):
        assert entry["level"] == "warning"
        assert entry["run_id"] == run.id
        assert entry["source"] == run.source
        assert {key: entry[key] for key in event} == json.loads(json.dumps(event))


# ---------------------------------------------------------------------------------------------
# similarity and match_fields


@pytest.mark.parametrize(
    ("expected", "found", "confidence"),
    [
        ("current_price", "current_price", 1.0),
        ("current_price", "currentPrice", RECASED_CONFIDENCE),
        ("current_price", "CURRENT-PRICE", RECASED_CONFIDENCE),
        ("full_name", "fullname", RECASED_CONFIDENCE),
        ("full_name", "FullName", RECASED_CONFIDENCE),
        ("last_updated", "lastUpdated", RECASED_CONFIDENCE),
        ("id", "ID", RECASED_CONFIDENCE),
        ("created_at", "created", 0.88),
        ("timestamp", "time_stamp", RECASED_CONFIDENCE),
        ("value", "val", 0.75),
        ("timestamp", "time", 0.62),
        ("current_price", "price", 0.59),
        ("value", "price", 0.2),
        ("current_price", "px", 0.14),
        ("name", "zzz", 0.0),
    ],
)
def test_similarity_scores_renames_from_zero_to_one(expected, found, confidence):
    assert similarity(expected, found) == confidence
    assert 0.0 <= similarity(found, expected) <= 1.0


@pytest.mark.parametrize(
    ("name", "normalised"),
    [("Current_Price", "currentprice"), ("full-name", "fullname"), ("created at", "createdat")],
)
def test_normalise_drops_case_and_separators(name, normalised):
    assert normalise(name) == normalised


@pytest.mark.parametrize(
    ("found", "threshold", "found_as", "missing", "events"),
    [
        pytest.param(
            ["id", "name", "value", "timestamp"],
            0.8,
            {"id": "id", "name": "name", "value": "value", "timestamp": "timestamp"},
            {},
            [],
            id="exact",
        ),
        pytest.param(
            ["timestamp", "value", "name", "id"],
            0.8,
            {"id": "id", "name": "name", "value": "value", "timestamp": "timestamp"},
            {},
            [],
            id="order-is-not-match_fields-business",
        ),
        pytest.param(
            ["id", "name", "Value", "timestamp"],
            0.8,
            {"id": "id", "name": "name", "value": "Value", "timestamp": "timestamp"},
            {},
            [
                {"kind": "renamed", "expected": "value", "found": "Value",
                 "confidence": 0.95, "action": "mapped"},
            ],
            id="re-cased",
        ),
        pytest.param(
            ["id", "name", "val", "timestamp"],
            0.75,
            {"id": "id", "name": "name", "value": "val", "timestamp": "timestamp"},
            {},
            [
                {"kind": "renamed", "expected": "value", "found": "val",
                 "confidence": 0.75, "action": "mapped"},
            ],
            id="exactly-at-threshold-maps",
        ),
        pytest.param(
            ["id", "name", "val", "timestamp"],
            0.8,
            {"id": "id", "name": "name", "timestamp": "timestamp"},
            {"value": "field 'value' is missing; closest is 'val' at 0.75"},
            [
                {"kind": "missing", "expected": "value", "closest": "val",
                 "confidence": 0.75, "action": "rows rejected"},
                {"kind": "unexpected", "found": "val", "action": "recorded"},
            ],
            id="below-threshold-missing",
        ),
        pytest.param(
            ["id", "name", "timestamp"],
            0.8,
            {"id": "id", "name": "name", "timestamp": "timestamp"},
            {"value": "field 'value' is missing"},
            [
                {"kind": "missing", "expected": "value", "closest": None,
                 "confidence": 0.0, "action": "rows rejected"},
            ],
            id="dropped-without-candidate",
        ),
        pytest.param(
            ["id", "name", "value", "timestamp", "note"],
            0.8,
            {"id": "id", "name": "name", "value": "value", "timestamp": "timestamp"},
            {},
            [{"kind": "unexpected", "found": "note", "action": "recorded"}],
            id="extra",
        ),
    ],
)  # fmt: skip
def test_match_fields_maps_renames_above_the_threshold_only(
    found, threshold, found_as, missing, events
):
    fields = match_fields(CSV1_COLUMNS, found, threshold)

    assert fields.found_as == found_as
    assert fields.missing == missing
    assert fields.events == events


def test_a_candidate_is_used_for_one_field_only_and_the_best_match_wins():
    fields = match_fields(("created_at", "updated_at"), ["createdAt", "created"], 0.8)

    assert fields.found_as == {"created_at": "createdAt"}
    assert fields.missing == {
        "updated_at": "field 'updated_at' is missing; closest is 'created' at 0.50"
    }
    assert [e["kind"] for e in fields.events] == ["renamed", "missing", "unexpected"]


def test_known_extras_are_not_drift_and_optional_fields_may_be_absent():
    fields = match_fields(
        ("id", "current_price", "name"),
        ["id", "currentPrice", "image"],
        0.8,
        known=("image",),
        required=("id", "current_price"),
    )

    assert fields.found_as == {"id": "id", "current_price": "currentPrice"}
    assert fields.missing == {}
    assert [e["kind"] for e in fields.events] == ["renamed"]


def test_field_map_reads_values_where_they_were_found_and_survives_a_round_trip():
    fields = match_fields(("current_price",), ["currentPrice"], 0.8)
    again = FieldMap.from_dict(json.loads(json.dumps(fields.to_dict())))

    assert again == fields
    assert again.get({"currentPrice": 1.5}, "current_price") == 1.5
    assert FieldMap.from_dict(None).get({"current_price": 2}, "current_price") == 2


def test_the_threshold_defaults_to_0_8_and_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("SCHEMA_DRIFT_THRESHOLD", raising=False)
    assert load_settings()["SCHEMA_DRIFT_THRESHOLD"] == 0.8
    monkeypatch.setenv("SCHEMA_DRIFT_THRESHOLD", "0.9")

    assert load_settings()["SCHEMA_DRIFT_THRESHOLD"] == 0.9


# ---------------------------------------------------------------------------------------------
# No drift, no events


def test_the_bundled_inputs_record_no_drift(client, run_etl):
    runs = run_etl("csv1", "csv2", "coingecko_api")

    for run in runs.values():
        assert run.status in ("SUCCESS", "PARTIAL")
        assert drift_of(client, run) == []
    assert not any("missing" in reason for _, reason in rejections("csv2"))


# ---------------------------------------------------------------------------------------------
# CSV: renamed, missing, extra and re-ordered columns


def test_renamed_csv1_column_above_threshold_is_mapped_and_rows_load(
    client, run_etl, csv_paths, capfd
):
    write_csv(csv_paths["CSV1_PATH"], ["id", "name", "value", "time_stamp"], CSV1_ROWS)
    capfd.readouterr()

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("SUCCESS", 3, 3, 0)
    assert unified("csv1") == {"bitcoin": "87387", "ethereum": "2922.48", "tether": "0.999512"}
    timestamps = db.session.scalars(
        sa.select(UnifiedRecord.timestamp).where(UnifiedRecord.source == "csv1")
    ).all()
    assert {t.isoformat() for t in timestamps} == {"2025-12-27T10:46:21+00:00"}
    events = [
        {"kind": "renamed", "expected": "timestamp", "found": "time_stamp",
         "confidence": 0.95, "action": "mapped"},
    ]  # fmt: skip
    assert drift_of(client, run) == events
    assert_logged(capfd, run, events)


def test_renamed_csv1_column_below_threshold_rejects_rows_with_the_reason(
    client, run_etl, csv_paths, capfd
):
    write_csv(csv_paths["CSV1_PATH"], ["id", "name", "price", "timestamp"], CSV1_ROWS)
    capfd.readouterr()

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("PARTIAL", 3, 0, 3)
    assert unified("csv1") == {}
    reason = "field 'value' is missing; closest is 'price' at 0.20"
    assert rejections("csv1") == [("line 2", reason), ("line 3", reason), ("line 4", reason)]
    events = [
        {"kind": "missing", "expected": "value", "closest": "price",
         "confidence": 0.2, "action": "rows rejected"},
        {"kind": "unexpected", "found": "price", "action": "recorded"},
    ]  # fmt: skip
    assert drift_of(client, run) == events
    assert_logged(capfd, run, events)


def test_rows_rejected_for_drift_do_not_block_the_file_once_its_header_is_fixed(
    client, run_etl, csv_paths
):
    write_csv(csv_paths["CSV1_PATH"], ["id", "name", "price", "timestamp"], CSV1_ROWS)
    assert run_etl("csv1")["csv1"].status == "PARTIAL"

    write_csv(csv_paths["CSV1_PATH"], list(CSV1_COLUMNS), CSV1_ROWS)
    fixed = run_etl("csv1")["csv1"]

    assert (fixed.status, fixed.rows_read, fixed.inserted, fixed.rejected) == ("SUCCESS", 3, 3, 0)
    assert drift_of(client, fixed) == []
    assert unified("csv1") == {"bitcoin": "87387", "ethereum": "2922.48", "tether": "0.999512"}


def test_renamed_csv2_columns_are_mapped_and_rows_load(client, run_etl, csv_paths, capfd):
    write_csv(csv_paths["CSV2_PATH"], ["record_id", "fullname", "score", "created"], CSV2_ROWS)
    capfd.readouterr()

    run = run_etl("csv2")["csv2"]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("SUCCESS", 2, 2, 0)
    assert unified("csv2") == {"mc-0001": "1740000000000", "mc-0002": "352547418866"}
    names = dict(
        db.session.execute(
            sa.select(UnifiedRecord.external_id, UnifiedRecord.symbol).where(
                UnifiedRecord.source == "csv2"
            )
        ).all()
    )
    assert names == {"mc-0001": "BTC", "mc-0002": "ETH"}
    events = [
        {"kind": "renamed", "expected": "full_name", "found": "fullname",
         "confidence": 0.95, "action": "mapped"},
        {"kind": "renamed", "expected": "created_at", "found": "created",
         "confidence": 0.88, "action": "mapped"},
    ]  # fmt: skip
    assert drift_of(client, run) == events
    assert_logged(capfd, run, events)


def test_renamed_header_of_the_bundled_quirky_csv2_keeps_its_other_outcomes(run_etl, csv_paths):
    path = csv_paths["CSV2_PATH"]
    text = path.read_bytes().decode("utf-8-sig")
    header, _, body = text.partition("\n")
    assert header.strip() == ",".join(CSV2_COLUMNS)
    path.write_bytes(b"\xef\xbb\xbf" + ("record_id,fullname,score,created\n" + body).encode())

    run = run_etl("csv2")["csv2"]

    # The same outcome as the bundled file under its own header: only the quirky rows fail.
    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("PARTIAL", 16, 12, 4)
    assert not any("missing" in reason for _, reason in rejections("csv2"))
    assert [e["kind"] for e in run.details["drift"]] == ["renamed", "renamed"]


@pytest.mark.parametrize(
    ("threshold", "mapped", "reason"),
    [
        (
            0.9,
            ["full_name"],
            "field 'created_at' is missing; closest is 'created' at 0.88",
        ),
        (
            0.99,
            [],
            "field 'full_name' is missing; closest is 'fullname' at 0.95; "
            "field 'created_at' is missing; closest is 'created' at 0.88",
        ),
    ],
)
def test_the_threshold_is_configurable(app, client, run_etl, csv_paths, threshold, mapped, reason):
    app.config["SCHEMA_DRIFT_THRESHOLD"] = threshold
    write_csv(csv_paths["CSV2_PATH"], ["record_id", "fullname", "score", "created"], CSV2_ROWS)

    run = run_etl("csv2")["csv2"]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("PARTIAL", 2, 0, 2)
    assert rejections("csv2") == [("line 2", reason), ("line 3", reason)]
    events = drift_of(client, run)
    assert [e["expected"] for e in events if e["kind"] == "renamed"] == mapped
    missing = {e["expected"]: e for e in events if e["kind"] == "missing"}
    assert missing["created_at"] == {
        "kind": "missing", "expected": "created_at", "closest": "created",
        "confidence": 0.88, "action": "rows rejected",
    }  # fmt: skip
    assert ("full_name" in missing) == (threshold > RECASED_CONFIDENCE)
    unexpected = [e["found"] for e in events if e["kind"] == "unexpected"]
    assert "created" in unexpected


def test_extra_csv_column_is_recorded_and_rows_load(client, run_etl, csv_paths, capfd):
    rows = [(*row, f"note {i}") for i, row in enumerate(CSV1_ROWS)]
    write_csv(csv_paths["CSV1_PATH"], [*CSV1_COLUMNS, "exchange"], rows)
    capfd.readouterr()

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("SUCCESS", 3, 3, 0)
    assert unified("csv1") == {"bitcoin": "87387", "ethereum": "2922.48", "tether": "0.999512"}
    events = [{"kind": "unexpected", "found": "exchange", "action": "recorded"}]
    assert drift_of(client, run) == events
    assert_logged(capfd, run, events)


def test_reordered_csv_columns_are_recorded_and_values_are_taken_by_name(
    client, run_etl, csv_paths, capfd
):
    order = ["timestamp", "value", "id", "name"]
    write_csv(csv_paths["CSV1_PATH"], order, csv1_rows_in(order))
    capfd.readouterr()

    run = run_etl("csv1")["csv1"]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("SUCCESS", 3, 3, 0)
    rows = db.session.execute(
        sa.select(
            UnifiedRecord.external_id,
            UnifiedRecord.name,
            UnifiedRecord.value,
            UnifiedRecord.timestamp,
            UnifiedRecord.asset_id,
        ).where(UnifiedRecord.source == "csv1")
    ).all()
    assert sorted((r[0], r[1], str(r[2]), r[3].isoformat(), r[4]) for r in rows) == [
        ("bitcoin", "Bitcoin", "87387", "2025-12-27T10:46:21+00:00", "bitcoin"),
        ("ethereum", "Ethereum", "2922.48", "2025-12-27T10:46:21+00:00", "ethereum"),
        ("tether", "Tether", "0.999512", "2025-12-27T10:46:21+00:00", "tether"),
    ]
    events = [{"kind": "reordered", "found": order, "action": "mapped by name"}]
    assert drift_of(client, run) == events
    assert_logged(capfd, run, events)


def test_reordered_and_renamed_csv2_columns_load_by_name(client, run_etl, csv_paths):
    header = ["Score", "created_at", "record_id", "Full_Name"]
    rows = [(score, created, record, name) for record, name, score, created in CSV2_ROWS]
    write_csv(csv_paths["CSV2_PATH"], header, rows)

    run = run_etl("csv2")["csv2"]

    assert (run.status, run.inserted, run.rejected) == ("SUCCESS", 2, 0)
    assert unified("csv2") == {"mc-0001": "1740000000000", "mc-0002": "352547418866"}
    kinds = sorted((e["kind"], e.get("expected")) for e in drift_of(client, run))
    assert kinds == [
        ("renamed", "full_name"),
        ("renamed", "score"),
        ("reordered", None),
    ]


# ---------------------------------------------------------------------------------------------
# CoinGecko: renamed fields


def renamed_coins(count: int, renames: dict[str, str]) -> list[dict]:
    """Return ``count`` imitation coins with some of their keys renamed."""
    return [
        {renames.get(key, key): value for key, value in coin.items()} for coin in make_coins(count)
    ]


def test_renamed_api_field_above_threshold_is_mapped_and_prices_load(
    client, coingecko, run_etl, capfd
):
    coingecko.coins = renamed_coins(5, {"current_price": "currentPrice"})
    capfd.readouterr()

    run = run_etl("coingecko_api")["coingecko_api"]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("SUCCESS", 5, 15, 0)
    prices = unified("coingecko_api", "price_usd")
    assert prices == {
        "bitcoin": "87387",
        "ethereum": "2922.48",
        "tether": "0.999512",
        "ripple": "1.86",
        "solana": "121.74",
    }
    events = [
        {"kind": "renamed", "expected": "current_price", "found": "currentPrice",
         "confidence": 0.95, "action": "mapped"},
    ]  # fmt: skip
    assert drift_of(client, run) == events
    assert_logged(capfd, run, events)


def test_renamed_api_identity_fields_are_mapped_too(client, coingecko, run_etl):
    coingecko.coins = renamed_coins(3, {"last_updated": "lastUpdated", "id": "ID"})

    run = run_etl("coingecko_api")["coingecko_api"]

    assert (run.status, run.inserted, run.rejected) == ("SUCCESS", 9, 0)
    assert set(unified("coingecko_api")) == {"bitcoin", "ethereum", "tether"}
    keys = db.session.scalars(sa.select(RawApiRecord.record_key).order_by(RawApiRecord.id)).all()
    assert keys[0] == "bitcoin@2025-12-27T10:46:21.358Z"
    assert sorted(e["expected"] for e in drift_of(client, run)) == ["id", "last_updated"]


def test_renamed_api_field_below_threshold_rejects_coins_with_the_reason(
    client, coingecko, run_etl, capfd
):
    coingecko.coins = renamed_coins(5, {"current_price": "px"})
    capfd.readouterr()

    run = run_etl("coingecko_api")["coingecko_api"]

    assert (run.status, run.rows_read, run.inserted, run.rejected) == ("PARTIAL", 5, 0, 5)
    assert unified("coingecko_api") == {}
    reason = "field 'current_price' is missing; closest is 'px' at 0.14"
    assert rejections("coingecko_api") == [
        (f"coin {coin_id}", reason)
        for coin_id in ("bitcoin", "ethereum", "tether", "ripple", "solana")
    ]
    # Nothing is lost: the coins are kept as received.
    assert db.session.scalar(sa.select(sa.func.count()).select_from(RawApiRecord)) == 5
    events = [
        {"kind": "missing", "expected": "current_price", "closest": "px",
         "confidence": 0.14, "action": "rows rejected"},
        {"kind": "unexpected", "found": "px", "action": "recorded"},
    ]  # fmt: skip
    assert drift_of(client, run) == events
    assert_logged(capfd, run, events)


def test_new_api_field_is_recorded_not_fatal(client, coingecko, run_etl):
    coins = make_coins(3)
    for coin in coins:
        coin["liquidity_score"] = 7.5
    coingecko.coins = coins

    run = run_etl("coingecko_api")["coingecko_api"]

    assert (run.status, run.inserted, run.rejected) == ("SUCCESS", 9, 0)
    assert drift_of(client, run) == [
        {"kind": "unexpected", "found": "liquidity_score", "action": "recorded"}
    ]


@pytest.mark.parametrize(
    "renames",
    [
        pytest.param({}, id="as-sent"),
        pytest.param({"symbol": "Symbol", "name": "Name"}, id="re-cased"),
    ],
)
def test_mapped_api_identity_fields_still_teach_new_coins(coingecko, run_etl, renames):
    # test-coin-6 and test-coin-7 are not in the seed: only CoinGecko's own symbol and name
    # make them known assets, so a mapped symbol or name must be read where it was found.
    coingecko.coins = renamed_coins(7, renames)

    run = run_etl("coingecko_api")["coingecko_api"]

    assert (run.status, run.inserted, run.rejected) == ("SUCCESS", 21, 0)
    assert run.unresolved == 0
    assets = dict(
        db.session.execute(
            sa.select(UnifiedRecord.external_id, UnifiedRecord.asset_id).where(
                UnifiedRecord.metric == "price_usd"
            )
        ).all()
    )
    assert assets["test-coin-6"] == "test-coin-6"
    assert assets["test-coin-7"] == "test-coin-7"
