"""/compare-runs and /anomalies on crafted histories, inserted directly, on both engines.

Every expected score is computed here by hand from the numbers chosen: robust z-scores for run
counts, relative changes for jumps, spreads for disagreements.
"""

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from kasparro.etl.versions import record_change
from kasparro.extensions import db
from kasparro.models import EtlRun, RunStatus, UnifiedRecord
from kasparro.read import anomalies as read_anomalies
from kasparro.read.run_outliers import robust_score

BASE = datetime(2025, 6, 10, tzinfo=UTC)  # long before any test runs
SINCE = (BASE - timedelta(days=30)).isoformat()
# Twenty runs' rows_read: median 1000, absolute deviations ten 0s and ten 1s, so MAD 0.5.
NORMAL_ROWS = [1000, 1001, 999, 1000] * 5
NORMAL_DURATIONS = [5000, 5040, 4960, 5020, 4980] * 4


def add_run(
    source: str,
    hour: int,
    status: str = RunStatus.SUCCESS,
    trigger: str = "schedule",
    **counts,
) -> EtlRun:
    """Store a run of ``source`` that started at BASE + ``hour`` hours with the given counts."""
    started = BASE + timedelta(hours=hour)
    duration = counts.pop("duration_ms", 5000)
    finished = status not in (RunStatus.RUNNING, RunStatus.SKIPPED)
    rows_read = counts.pop("rows_read", 1000)
    run = EtlRun(
        source=source,
        status=status,
        trigger=trigger,
        started_at=started,
        finished_at=started + timedelta(milliseconds=duration) if finished else None,
        duration_ms=duration if finished else None,
        rows_read=rows_read,
        inserted=counts.pop("inserted", rows_read),
        updated=counts.pop("updated", 0),
        unchanged=counts.pop("unchanged", 0),
        rejected=counts.pop("rejected", 0),
        unresolved=0,
        details=counts.pop("details", None),
    )
    assert not counts, counts
    db.session.add(run)
    _commit()
    return run


def observe(run: EtlRun, asset: str, value: str, at: datetime, metric: str = "price_usd"):
    """Store an observation of ``asset`` by ``run``'s source, ingested when ``run`` finished."""
    db.session.add(
        UnifiedRecord(
            source=run.source,
            external_id=asset,
            asset_id=asset,
            symbol=asset[:3].upper(),
            name=asset.title(),
            metric=metric,
            value=Decimal(value),
            currency="USD",
            timestamp=at,
            ingested_at=run.finished_at or run.started_at,
            run_id=run.id,
        )
    )
    _commit()


def _commit():
    record_change(db.session, "tests")  # as the ETL does: kept answers see the change
    db.session.commit()


def normal_history(source: str = "csv1", first_hour: int = 0) -> list[EtlRun]:
    """Store twenty runs with small natural variation in rows_read and duration."""
    return [
        add_run(source, first_hour + i, rows_read=rows, duration_ms=duration)
        for i, (rows, duration) in enumerate(zip(NORMAL_ROWS, NORMAL_DURATIONS, strict=True))
    ]


def anomalies(client, **query) -> dict:
    """Return the body of GET /anomalies, asserting it answered 200."""
    response = client.get("/anomalies", query_string={"since": SINCE, **query})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_a_normal_series_gives_no_anomalies(app, client):
    runs = normal_history("csv1")
    normal_history("coingecko_api", first_hour=100)
    # Neither a SKIPPED nor a RUNNING run is judged or counted in a history.
    add_run("csv1", 30, status=RunStatus.SKIPPED, rows_read=0, inserted=0, duration_ms=1)
    add_run("csv1", 31, status=RunStatus.RUNNING, rows_read=9, inserted=9)
    # Prices that move a little, from two sources that agree within the spread.
    for i, (ours, theirs) in enumerate([("100", "101"), ("101", "102"), ("99.5", "101.5")]):
        observe(runs[i], "bitcoin", ours, BASE + timedelta(hours=i))
        observe(runs[i], "bitcoin", theirs, BASE + timedelta(hours=i), metric="volume_24h_usd")
    coingecko = add_run("coingecko_api", 200)
    observe(coingecko, "bitcoin", "102", BASE + timedelta(hours=5))

    body = anomalies(client)

    assert body["anomalies"] == []
    assert body["next_cursor"] is None
    assert body["kinds"] == list(read_anomalies.KINDS)
    assert body["thresholds"] == {
        "mad": 3.5,
        "history_runs": 20,
        "jump_percent": 50.0,
        "spread_percent": 5.0,
    }


def test_a_spike_in_run_counts_is_flagged_with_its_robust_z_score(app, client):
    normal_history("csv1")
    # rejected: eighteen 0s and two 4s, so median 0, MAD 0, mean absolute deviation 8/20.
    db.session.get(EtlRun, 3).rejected = 4
    db.session.get(EtlRun, 7).rejected = 4
    _commit()
    spike = add_run("csv1", 20, rows_read=1500, inserted=1000, updated=10, rejected=50)

    # Only the spike finished since then: the runs before it are its history.
    body = anomalies(client, since=spike.started_at.isoformat())

    flagged = [(a["run"]["run_id"], a["run"]["measure"], a["score"]) for a in body["anomalies"]]
    assert flagged == [
        (spike.id, "rows_read", 0.6745 * (1500 - 1000) / 0.5),
        # updated was 0 in every earlier run: MAD is taken as one unit.
        (spike.id, "updated", 0.6745 * (10 - 0)),
        (spike.id, "rejected", (50 - 0) / (1.253314 * (8 / 20))),
    ]
    rows_read = body["anomalies"][0]
    assert rows_read["kind"] == "run_outlier"
    assert rows_read["source"] == "csv1"
    assert rows_read["threshold"] == 3.5
    assert rows_read["run"] == {
        "run_id": spike.id,
        "status": "SUCCESS",
        "measure": "rows_read",
        "value": 1500,
        "median": 1000.0,
        "mad": 0.5,
        "mean_absolute_deviation": 0.5,
        "scale": "mad",
        "history_runs": 20,
    }
    assert "rows_read of run 21 was 1500 against a median of 1000" in rows_read["reason"]
    assert "robust z-score 674.50" in rows_read["reason"]
    assert [a["run"]["scale"] for a in body["anomalies"]] == ["mad", "unit", "mean_ad"]


@pytest.mark.parametrize("rows_read", [0, 1_000_000])
def test_a_reprocess_is_neither_judged_nor_part_of_a_history(app, client, rows_read):
    normal_history("csv1")
    reprocess = add_run("csv1", 20, trigger="reprocess", rows_read=rows_read, duration_ms=90_000)
    after = add_run("csv1", 21, rows_read=1000, duration_ms=5000)

    body = anomalies(client, since=reprocess.started_at.isoformat())
    history = read_anomalies._histories(db.session, [after], 20)[after.id]

    assert body["anomalies"] == []
    assert reprocess not in history and len(history) == 20


def test_a_run_with_too_little_history_is_not_judged(app, client):
    for hour in range(4):
        add_run("csv2", hour, rows_read=100)
    add_run("csv2", 4, rows_read=100_000)

    assert anomalies(client)["anomalies"] == []


def test_only_runs_finished_since_the_window_start_are_judged(app, client):
    normal_history("csv1")
    add_run("csv1", 20, rows_read=1500)

    late = anomalies(client, since=(BASE + timedelta(hours=21)).isoformat())
    default = client.get("/anomalies").get_json()  # the last 24 hours: long after BASE

    assert late["anomalies"] == []
    assert default["anomalies"] == []
    assert datetime.fromisoformat(default["since"]) > datetime.now(UTC) - timedelta(hours=25)


def test_a_price_jump_is_flagged_with_its_exact_relative_change(app, client):
    csv1, coingecko = add_run("csv1", 0), add_run("coingecko_api", 0)
    before_window = BASE - timedelta(days=40)
    observe(csv1, "bitcoin", "80", before_window)
    observe(csv1, "bitcoin", "100", BASE + timedelta(hours=1))  # +25% from 80: not flagged
    observe(csv1, "bitcoin", "102", BASE + timedelta(hours=2))
    observe(csv1, "bitcoin", "255", BASE + timedelta(hours=3))  # +150% from 102
    observe(csv1, "bitcoin", "102", BASE + timedelta(hours=4))  # -60% from 255
    # Another source's observations in between are not the previous observation of csv1's.
    for hour in range(1, 5):
        observe(coingecko, "bitcoin", "101", BASE + timedelta(hours=hour, minutes=30))
    # From zero there is no relative change; a first observation has none either.
    observe(csv1, "ethereum", "0", BASE + timedelta(hours=1))
    observe(csv1, "ethereum", "5", BASE + timedelta(hours=2))

    body = anomalies(client, kind="value_jump")

    assert [
        (a["jump"]["value"], a["jump"]["previous_value"], a["score"]) for a in body["anomalies"]
    ] == [
        ("102", "255", float((Decimal(102) - Decimal(255)) / Decimal(255) * 100)),
        ("255", "102", 150.0),
    ]
    assert body["anomalies"][1] == {
        "kind": "value_jump",
        "source": "csv1",
        "at": (BASE + timedelta(hours=3)).isoformat(),
        "score": 150.0,
        "threshold": 50.0,
        "reason": body["anomalies"][1]["reason"],
        "jump": {
            "asset_id": "bitcoin",
            "metric": "price_usd",
            "record_id": 4,
            "value": "255",
            "timestamp": (BASE + timedelta(hours=3)).isoformat(),
            "previous_record_id": 3,
            "previous_value": "102",
            "previous_timestamp": (BASE + timedelta(hours=2)).isoformat(),
        },
    }
    assert "moved from 102" in body["anomalies"][1]["reason"]
    assert "+150.00%" in body["anomalies"][1]["reason"]


# Moves of +20%, +150% and -70% in turn, flagged or not by where ANOMALY_JUMP_PERCENT lies.
@pytest.mark.parametrize(
    ("threshold", "flagged"),
    [
        ("10", [-70.0, 150.0, 20.0]),
        ("100", [150.0]),
        ("149.5", [150.0]),
        ("200", []),
    ],
)
def test_a_value_jump_is_flagged_beyond_the_configured_percent(
    request, settings, threshold, flagged
):
    settings["ANOMALY_JUMP_PERCENT"] = threshold
    request.getfixturevalue("app")
    client = request.getfixturevalue("client")
    run = add_run("csv1", 0)
    for hour, value in enumerate(("100", "120", "300", "90")):
        observe(run, "bitcoin", value, BASE + timedelta(hours=hour))

    body = anomalies(client, kind="value_jump")

    assert body["thresholds"]["jump_percent"] == float(threshold)
    assert [a["score"] for a in body["anomalies"]] == flagged
    assert {a["threshold"] for a in body["anomalies"]} <= {float(threshold)}
    assert all(f"beyond ±{float(threshold):g}%" in a["reason"] for a in body["anomalies"])


def test_a_jump_from_before_the_window_is_flagged_by_its_later_observation(app, client):
    run = add_run("csv1", 0)
    observe(run, "bitcoin", "100", BASE - timedelta(days=2))
    observe(run, "bitcoin", "40", BASE)

    body = anomalies(client, kind="value_jump", since=(BASE - timedelta(days=1)).isoformat())

    assert [a["score"] for a in body["anomalies"]] == [-60.0]
    assert (
        body["anomalies"][0]["jump"]["previous_timestamp"] == (BASE - timedelta(days=2)).isoformat()
    )


def test_a_cross_source_disagreement_is_flagged_with_its_exact_spread(app, client):
    runs = {source: add_run(source, 0) for source in ("coingecko_api", "csv1", "csv2")}
    at = BASE + timedelta(hours=1)
    # ethereum: 100, 100 and 110: median 100, spread 10 / 100 = 10%.
    for source, value in (("coingecko_api", "110"), ("csv1", "100"), ("csv2", "100")):
        observe(runs[source], "ethereum", value, at)
    # bitcoin: 100, 102, 104: a 4% spread, within 5%.
    for source, value in (("coingecko_api", "104"), ("csv1", "100"), ("csv2", "102")):
        observe(runs[source], "bitcoin", value, at)
    # solana: csv1's 100 is recent, coingecko's 200 is from before the window: no disagreement.
    observe(runs["csv1"], "solana", "100", at)
    observe(runs["coingecko_api"], "solana", "200", BASE - timedelta(days=60))

    body = anomalies(client, kind="source_disagreement")

    assert body["anomalies"] == [
        {
            "kind": "source_disagreement",
            "source": None,
            "at": at.isoformat(),
            "score": 10.0,
            "threshold": 5.0,
            "reason": body["anomalies"][0]["reason"],
            "disagreement": {
                "asset_id": "ethereum",
                "metric": "price_usd",
                "median": "100",
                "low": "100",
                "high": "110",
                "values": [
                    {"source": "coingecko_api", "value": "110", "timestamp": at.isoformat()},
                    {"source": "csv1", "value": "100", "timestamp": at.isoformat()},
                    {"source": "csv2", "value": "100", "timestamp": at.isoformat()},
                ],
            },
        }
    ]
    assert "a spread of 10.00% of the median 100" in body["anomalies"][0]["reason"]
    # A source filter keeps the disagreements that source takes part in.
    assert len(anomalies(client, kind="source_disagreement", source="csv2")["anomalies"]) == 1


def all_kinds_of_anomalies() -> None:
    """Store a history with two run outliers, three jumps and two disagreements."""
    runs = normal_history("csv1")
    add_run("csv1", 20, rows_read=1500, inserted=1000, updated=10)
    coingecko = add_run("coingecko_api", 0)
    for asset, jumps in (("bitcoin", ["100", "200", "50"]), ("ethereum", ["10", "30"])):
        for hour, value in enumerate(jumps):
            observe(runs[hour], asset, value, BASE + timedelta(hours=hour))
        observe(coingecko, asset, "1", BASE + timedelta(hours=9))


def test_pages_walk_every_anomaly_once_in_order_whatever_a_page_reads(app, client, monkeypatch):
    all_kinds_of_anomalies()
    whole = anomalies(client, page_size=100)
    assert [a["kind"] for a in whole["anomalies"]] == (
        ["run_outlier"] * 2 + ["value_jump"] * 3 + ["source_disagreement"] * 2
    )
    assert whole["next_cursor"] is None
    # Pages that read one run, two observations, one asset pair at a time, one anomaly each.
    monkeypatch.setattr(read_anomalies, "RUNS_PER_PAGE", 1)
    monkeypatch.setattr(read_anomalies, "JUMP_ROWS_PER_PAGE", 2)
    monkeypatch.setattr(read_anomalies, "PAIRS_PER_PAGE", 1)

    walked, cursor, pages = [], None, 0
    while True:
        page = anomalies(client, page_size=1, **({"cursor": cursor} if cursor else {}))
        assert len(page["anomalies"]) <= 1
        walked += page["anomalies"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert walked == whole["anomalies"]
    assert pages > len(walked)  # some pages read without finding: the scans are bounded


def test_a_cursor_that_was_not_issued_is_a_400_naming_it(app, client):
    all_kinds_of_anomalies()
    first = anomalies(client, page_size=1, kind="value_jump")
    forged = base64.urlsafe_b64encode(
        json.dumps({"k": "run_outlier", "p": [2**40, 0], "s": SINCE}).encode()
    )

    for cursor, kind in (
        ("not-a-cursor", None),
        (first["next_cursor"], "source_disagreement"),  # issued for another kind
        (forged.decode(), None),
    ):
        query = {"cursor": cursor, **({"kind": kind} if kind else {})}
        response = client.get("/anomalies", query_string=query)
        assert response.status_code == 400, response.get_json()
        assert "cursor" in response.get_json()["errors"]["query"]


@pytest.mark.parametrize(
    ("history", "value", "expected", "scale"),
    [
        ([1, 2, 3, 4, 100], 10, 0.6745 * (10 - 3) / 1, "mad"),
        ([5, 5, 5, 5, 9], 7, (7 - 5) / (1.253314 * 0.8), "mean_ad"),
        ([5, 5, 5, 5, 5], 5, 0.0, "unit"),
        ([5, 5, 5, 5, 5], 11, 0.6745 * 6, "unit"),
    ],
)
def test_robust_scores_stay_finite_whatever_the_history(history, value, expected, scale):
    scored = robust_score(value, history)
    assert (scored.score, scored.scale) == (expected, scale)


# --- /compare-runs ------------------------------------------------------------------------


def compare(client, status: int = 200, **query) -> dict:
    """Return the body of GET /compare-runs, asserting its status."""
    response = client.get("/compare-runs", query_string=query)
    assert response.status_code == status, response.get_json()
    return response.get_json()


RENAMED = {"kind": "renamed", "expected": "value", "found": "Value", "confidence": 0.95}
UNEXPECTED = {"kind": "unexpected", "found": "note", "action": "recorded"}


def two_runs_with_movers() -> tuple[EtlRun, EtlRun]:
    """Store two csv1 runs with known counts and drift, and values that moved between them."""
    drift_a, drift_b = {"drift": [RENAMED]}, {"drift": [RENAMED, UNEXPECTED]}
    run_a = add_run("csv1", 0, rows_read=200, inserted=150, updated=20, unchanged=10,
                    rejected=20, duration_ms=4000, details=drift_a)  # fmt: skip
    run_b = add_run("csv1", 1, rows_read=250, inserted=100, updated=90, unchanged=55,
                    rejected=5, duration_ms=6500, details=drift_b)  # fmt: skip
    for asset, before, after in (
        ("bitcoin", "100", "150"),  # +50%
        ("ethereum", "200", "100"),  # -50%: ties with bitcoin, after it by asset id
        ("solana", "10", "11"),  # +10%
        ("tether", "1", "1"),  # did not move
        ("zero", "0", "5"),  # from zero: no relative change
    ):
        observe(run_a, asset, before, BASE)
        observe(run_b, asset, after, BASE + timedelta(hours=1))
    observe(run_b, "newcoin", "3", BASE + timedelta(hours=1))  # no value at run_a
    # Observed at run_a's time but stored by run_b: not known when run_a finished.
    observe(run_b, "solana", "9", BASE + timedelta(seconds=1))
    return run_a, run_b


def test_compare_runs_shows_exact_differences_and_the_movers_in_order(app, client):
    run_a, run_b = two_runs_with_movers()

    body = compare(client, run_a=run_a.id, run_b=run_b.id)

    assert body["source"] == "csv1"
    assert (body["run_a"]["id"], body["run_b"]["id"]) == (run_a.id, run_b.id)
    assert body["counts"] == {
        "rows_read": {"run_a": 200, "run_b": 250, "difference": 50},
        "inserted": {"run_a": 150, "run_b": 100, "difference": -50},
        "updated": {"run_a": 20, "run_b": 90, "difference": 70},
        "unchanged": {"run_a": 10, "run_b": 55, "difference": 45},
        "rejected": {"run_a": 20, "run_b": 5, "difference": -15},
    }
    assert body["duration_ms"] == {"run_a": 4000, "run_b": 6500, "difference": 2500}
    assert body["rejected_rate"] == {"run_a": 0.1, "run_b": 0.02, "difference": 0.02 - 0.1}
    assert body["drift"] == {
        "run_a": [RENAMED],
        "run_b": [RENAMED, UNEXPECTED],
        "appeared": [UNEXPECTED],
        "disappeared": [],
    }
    assert body["movers"] == [
        {"asset_id": "bitcoin", "metric": "price_usd", "value_a": "100", "value_b": "150",
         "change": "50", "change_percent": 50.0},
        {"asset_id": "ethereum", "metric": "price_usd", "value_a": "200", "value_b": "100",
         "change": "-100", "change_percent": -50.0},
        {"asset_id": "solana", "metric": "price_usd", "value_a": "10", "value_b": "11",
         "change": "1", "change_percent": 10.0},
    ]  # fmt: skip
    assert body["movers_compared"] == 4  # bitcoin, ethereum, solana, tether
    top_one = compare(client, run_a=run_a.id, run_b=run_b.id, top=1)
    assert [m["asset_id"] for m in top_one["movers"]] == ["bitcoin"]
    assert compare(client, run_a=run_a.id, run_b=run_b.id, metric="market_cap_usd")["movers"] == []


def test_compare_runs_defaults_to_the_last_two_finished_runs(app, client):
    add_run("csv1", 0, rows_read=1)
    older = add_run("csv1", 1, rows_read=10)
    newer = add_run("csv1", 2, status=RunStatus.FAILED, rows_read=0, inserted=0)
    add_run("csv1", 3, status=RunStatus.SKIPPED)
    add_run("csv1", 4, status=RunStatus.RUNNING)
    add_run("csv1", 5, trigger="reprocess", rows_read=5000)  # stored rows read again: no load
    add_run("csv2", 5)

    body = compare(client, source="csv1")
    alone = compare(client, run_b=newer.id)  # run_b alone: with the finished run before it

    assert (body["run_a"]["id"], body["run_b"]["id"]) == (older.id, newer.id)
    assert body["counts"]["rows_read"] == {"run_a": 10, "run_b": 0, "difference": -10}
    assert body["rejected_rate"] == {"run_a": 0.0, "run_b": None, "difference": None}
    assert (alone["run_a"]["id"], alone["run_b"]["id"]) == (older.id, newer.id)


def test_compare_runs_refuses_unknown_runs_runs_of_two_sources_and_no_source(app, client):
    csv1, csv2 = add_run("csv1", 0), add_run("csv2", 1)

    unknown = compare(client, 404, run_a=csv1.id, run_b=999)
    assert "run_b" in unknown["message"]
    assert "run_a" in compare(client, 404, run_a=998, run_b=csv1.id)["message"]
    assert compare(client, 422, run_a=csv1.id, run_b=csv2.id)["errors"]["query"].keys() == {"run_b"}
    assert compare(client, 422)["errors"]["query"].keys() == {"source"}
    assert compare(client, 422, run_a=csv1.id)["errors"]["query"].keys() == {"run_b"}
    assert compare(client, 422, run_a=0, run_b=csv1.id)["errors"]["query"].keys() == {"run_a"}
    assert compare(client, 422, top=101, source="csv1")["errors"]["query"].keys() == {"top"}
    # One finished run is not enough to compare, nor a run without one before it.
    assert "two are compared" in compare(client, 404, source="csv1")["message"]
    assert compare(client, 404, run_b=csv1.id)["message"].startswith(f"run {csv1.id}")
    later = add_run("csv1", 2)
    mismatch = compare(client, 422, run_a=csv1.id, run_b=later.id, source="csv2")
    assert mismatch["errors"]["query"].keys() == {"source"}
    # The same run twice, or the later run first, compares nothing: run_a must come first.
    for run_a, run_b in ((csv1.id, csv1.id), (later.id, csv1.id)):
        wrong = compare(client, 422, run_a=run_a, run_b=run_b)["errors"]["query"]
        assert wrong.keys() == {"run_a"} and "earlier run" in wrong["run_a"][0]
