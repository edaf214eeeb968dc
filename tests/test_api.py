"""The read API: /data paging, filters and cursors, bad input, request ids, /health, /stats, /runs.

Every test talks HTTP to the app through the test client and checks the answer against what the
database holds, on SQLite and on PostgreSQL.
"""

import base64
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from kasparro import create_app
from kasparro.etl.runs import start_run
from kasparro.extensions import db
from kasparro.models import EtlRun, RejectedRecord, UnifiedRecord

BASE_TIME = datetime(2025, 1, 1, tzinfo=UTC)
RECORD_FIELDS = {
    "id",
    "source",
    "external_id",
    "name",
    "value",
    "timestamp",
    "asset_id",
    "symbol",
    "metric",
    "currency",
    "ingested_at",
    "run_id",
}
SOURCES = ("coingecko_api", "csv1", "csv2")
METRICS = ("price_usd", "market_cap_usd", "volume_24h_usd")
COINS = (("bitcoin", "BTC", "Bitcoin"), ("ethereum", "ETH", "Ethereum"), (None, None, "Mystery"))
UNREACHABLE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
REQUEST_ID_HEADER = "X-Request-ID"


# ---------------------------------------------------------------------------------------------
# helpers


def at(hours: float) -> datetime:
    """Return the moment ``hours`` after the base time of the hand-made observations."""
    return BASE_TIME + timedelta(hours=hours)


def observation(n: int, **overrides) -> dict:
    """Return one unified row, distinct for each ``n``, one hour later for each step of ``n``."""
    asset_id, symbol, name = COINS[(n // 9) % len(COINS)]
    return {
        "source": SOURCES[n % len(SOURCES)],
        "external_id": f"obs-{n}",
        "asset_id": asset_id,
        "symbol": symbol,
        "name": name,
        "metric": METRICS[(n // 3) % len(METRICS)],
        "value": Decimal(f"{n}.000000000000000001"),
        "currency": "USD",
        "timestamp": at(n),
        **overrides,
    }


def forged_cursor(timestamp: str, record_id: int) -> str:
    """Return a cursor in the server's own encoding that points after (timestamp, id)."""
    text = json.dumps({"t": timestamp, "i": record_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def get_json(client, path: str, **params) -> dict:
    """GET ``path`` with query ``params``, check it answered 200, and return its JSON body."""
    response = client.get(path, query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.is_json
    return response.get_json()


def assert_rejected_naming(response, *names: str) -> None:
    """Check a JSON 4xx whose body names one of ``names`` as the wrong parameter."""
    text = response.get_data(as_text=True)
    assert response.status_code in (400, 422), f"{response.status_code}: {text}"
    assert response.is_json, text
    assert any(f'"{name}"' in text for name in names), f"{names} not named in {text}"


def assert_not_a_server_error(response, *names: str) -> None:
    """Check an answer below 500, in JSON; a 4xx must name one of ``names``."""
    text = response.get_data(as_text=True)
    assert response.status_code < 500, f"server error for bad input: {text}"
    assert response.is_json, text
    if response.status_code >= 400:
        assert_rejected_naming(response, *names)


def stored_order(*conditions) -> list[int]:
    """Return the ids of the stored observations, newest first, computed outside the API."""
    rows = db.session.execute(
        sa.select(UnifiedRecord.id, UnifiedRecord.timestamp).where(*conditions)
    ).all()
    return [row.id for row in sorted(rows, key=lambda row: (row.timestamp, row.id), reverse=True)]


def walk_by_page(client, page_size: int, **filters) -> list[int]:
    """Fetch every page by number, check the page after the last is empty, return the ids."""
    first = get_json(client, "/data", page_size=page_size, **filters)
    total_pages = first["pagination"]["total_pages"]
    ids = [item["id"] for item in first["data"]]
    for page in range(2, total_pages + 1):
        body = get_json(client, "/data", page=page, page_size=page_size, **filters)
        ids += [item["id"] for item in body["data"]]
    beyond = get_json(client, "/data", page=total_pages + 1, page_size=page_size, **filters)
    assert beyond["data"] == []
    return ids


def walk_by_cursor(client, page_size: int, after_first_page=lambda: None, **filters) -> list[int]:
    """Follow next_cursor from the first page until it is null; return the ids in order."""
    params = {"page_size": page_size, **filters}
    ids: list[int] = []
    for pages in range(1, 1000):
        body = get_json(client, "/data", **params)
        assert len(body["data"]) <= page_size
        ids += [item["id"] for item in body["data"]]
        if pages == 1:
            after_first_page()
        else:
            assert body["pagination"]["page"] is None
        if body["pagination"]["next_cursor"] is None:
            return ids
        params["cursor"] = body["pagination"]["next_cursor"]
    raise AssertionError("the cursor walk never ended")


def parse_time(text: str | None) -> datetime | None:
    """Parse an ISO 8601 time from a response."""
    return None if text is None else datetime.fromisoformat(text)


def count(model, *conditions) -> int:
    """Count the rows of ``model`` that match ``conditions``."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*conditions))


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def add_records(app):
    """Return a function that bulk-inserts unified rows under one run made for them."""
    run = EtlRun(source="csv1", status="SUCCESS", trigger="cli")
    db.session.add(run)
    db.session.commit()
    run_id = run.id

    def add(rows: list[dict]) -> list[dict]:
        if rows:
            db.session.execute(sa.insert(UnifiedRecord), [{**r, "run_id": run_id} for r in rows])
            db.session.commit()
        return rows

    return add


@pytest.fixture
def add_runs(app):
    """Return a function that inserts finished runs of (source, status) and returns their ids."""

    def add(*specs: tuple[str, str]) -> list[int]:
        runs = [
            EtlRun(source=source, status=status, trigger="cli", finished_at=at(i))
            for i, (source, status) in enumerate(specs)
        ]
        db.session.add_all(runs)
        db.session.commit()
        return [run.id for run in runs]

    return add


@pytest.fixture
def fail_csv1(app, run_etl, tmp_path):
    """Return a function that runs csv1 against a missing file, so the run fails."""

    def fail() -> EtlRun:
        original = app.config["CSV1_PATH"]
        app.config["CSV1_PATH"] = str(tmp_path / "missing.csv")
        try:
            run = run_etl("csv1")["csv1"]
        finally:
            app.config["CSV1_PATH"] = original
        assert run.status == "FAILED"
        return run

    return fail


@pytest.fixture
def offline_client():
    """Return a client of an app whose database does not answer (PostgreSQL on port 1)."""
    application = create_app({"SQLALCHEMY_DATABASE_URI": UNREACHABLE_DATABASE})
    yield application.test_client()
    with application.app_context():
        db.engine.dispose()


# ---------------------------------------------------------------------------------------------
# GET /data: shape and order


def test_data_page_has_the_documented_shape_and_exact_decimal_values(client, add_records):
    exact = "12345678901234567890.12345678901234567890123456789"  # canonical: no trailing zero
    tiny = "0.00000000123"
    add_records([observation(1, value=Decimal(exact)), observation(2, value=Decimal(tiny))])

    body = get_json(client, "/data")

    assert set(body) == {"data", "pagination", "meta"}
    assert body["pagination"] == {
        "page": 1,
        "page_size": 10,
        "total": 2,
        "total_pages": 1,
        "total_is_estimate": False,
        "next_cursor": None,
    }
    assert set(body["meta"]) == {"request_id", "api_latency_ms"}
    assert isinstance(body["meta"]["api_latency_ms"], int | float)
    assert body["meta"]["api_latency_ms"] >= 0
    stored = {r.external_id: r for r in db.session.scalars(sa.select(UnifiedRecord))}
    for item in body["data"]:
        assert set(item) == RECORD_FIELDS
        row = stored[item["external_id"]]
        assert item == {
            "id": row.id,
            "source": row.source,
            "external_id": row.external_id,
            "name": row.name,
            "value": format(row.value, "f"),
            "timestamp": row.timestamp.isoformat(),
            "asset_id": row.asset_id,
            "symbol": row.symbol,
            "metric": row.metric,
            "currency": "USD",
            "ingested_at": row.ingested_at.isoformat(),
            "run_id": row.run_id,
        }
    assert [item["value"] for item in body["data"]] == [tiny, exact]


def test_records_come_newest_first_with_the_id_breaking_ties(client, run_etl):
    run_etl("csv1", "csv2")

    body = get_json(client, "/data", page_size=100)

    assert [item["id"] for item in body["data"]] == stored_order()
    timestamps = [item["timestamp"] for item in body["data"]]
    assert len(set(timestamps)) < len(timestamps), "the bundled data should contain ties"
    values = {item["external_id"]: item["value"] for item in body["data"]}
    assert values["mc-0005"] == "116041234567.5"
    assert values["tether"] == "0.999512"


# ---------------------------------------------------------------------------------------------
# GET /data: totals and pages


@pytest.mark.parametrize(
    ("rows", "page_size", "expected_pages"),
    [(25, 10, 3), (0, 10, 0), (20, 10, 2), (1, 100, 1), (100, 100, 1), (101, 100, 2), (7, 1, 7)],
)
def test_total_and_total_pages_match_the_row_count(
    client, add_records, rows, page_size, expected_pages
):
    add_records([observation(n) for n in range(rows)])

    sizes = []
    for page in range(1, expected_pages + 2):
        body = get_json(client, "/data", page=page, page_size=page_size)
        assert body["pagination"]["total"] == rows
        assert body["pagination"]["total_pages"] == expected_pages
        assert (body["pagination"]["page"], body["pagination"]["page_size"]) == (page, page_size)
        sizes.append(len(body["data"]))

    assert sizes[-1] == 0, "a page beyond the end is empty"
    assert sum(sizes) == rows
    assert all(size == page_size for size in sizes[: expected_pages - 1])


# ---------------------------------------------------------------------------------------------
# GET /data: filters


def inclusive_bound(n: int, zone=UTC) -> str:
    """Return the exact timestamp of observation ``n`` as ISO text in ``zone``."""
    return at(n).astimezone(zone).isoformat()


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"source": "csv2"}, lambda r: r["source"] == "csv2"),
        ({"source": "coingecko_api"}, lambda r: r["source"] == "coingecko_api"),
        ({"asset": "bitcoin"}, lambda r: r["asset_id"] == "bitcoin"),
        ({"asset": "Ethereum"}, lambda r: r["asset_id"] == "ethereum"),
        ({"symbol": "btc"}, lambda r: r["symbol"] == "BTC"),
        ({"symbol": "BTC"}, lambda r: r["symbol"] == "BTC"),
        ({"symbol": "eTh"}, lambda r: r["symbol"] == "ETH"),
        ({"metric": "market_cap_usd"}, lambda r: r["metric"] == "market_cap_usd"),
        ({"since": inclusive_bound(20)}, lambda r: r["timestamp"] >= at(20)),
        ({"until": inclusive_bound(20)}, lambda r: r["timestamp"] <= at(20)),
        (
            {"since": inclusive_bound(7), "until": inclusive_bound(7)},
            lambda r: r["external_id"] == "obs-7",
        ),
        (
            {"since": inclusive_bound(5, timezone(timedelta(hours=2)))},
            lambda r: r["timestamp"] >= at(5),
        ),
        ({"until": at(5).replace(tzinfo=None).isoformat()}, lambda r: r["timestamp"] <= at(5)),
        (
            {"source": "csv1", "metric": "price_usd", "since": inclusive_bound(3)},
            lambda r: (
                (r["source"], r["metric"]) == ("csv1", "price_usd") and r["timestamp"] >= at(3)
            ),
        ),
        (
            {"asset": "ethereum", "symbol": "eth", "until": inclusive_bound(30)},
            lambda r: r["asset_id"] == "ethereum" and r["timestamp"] <= at(30),
        ),
        ({"asset": "bitcoin", "symbol": "ETH"}, lambda r: False),
        ({"source": "csv2", "since": inclusive_bound(36)}, lambda r: False),
    ],
    ids=lambda value: (
        "&".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else ""
    ),
)
def test_every_filter_selects_exactly_the_matching_records(client, add_records, params, keep):
    rows = add_records([observation(n) for n in range(36)])
    newest_first = sorted(rows, key=lambda r: r["timestamp"], reverse=True)
    expected = [r["external_id"] for r in newest_first if keep(r)]

    body = get_json(client, "/data", page_size=100, **params)

    assert [item["external_id"] for item in body["data"]] == expected
    assert body["pagination"]["total"] == len(expected)
    assert body["pagination"]["total_pages"] == (1 if expected else 0)


@pytest.mark.parametrize("symbol", ["btc", "BTC", " Btc "])
def test_symbol_filter_matches_every_source_that_reports_the_symbol(client, run_etl, symbol):
    run_etl("coingecko_api", "csv2")
    expected = stored_order(UnifiedRecord.symbol == "BTC")

    body = get_json(client, "/data", symbol=symbol, page_size=100)

    assert [item["id"] for item in body["data"]] == expected
    assert {item["source"] for item in body["data"]} == {"coingecko_api", "csv2"}


# ---------------------------------------------------------------------------------------------
# GET /data: walking every page


def tied_rows(tied: int, distinct: int, start: int = 0, hour: float = 100) -> list[dict]:
    """Return ``tied`` rows sharing one timestamp and ``distinct`` rows at their own times."""
    return [observation(start + n, timestamp=at(hour)) for n in range(tied)] + [
        observation(start + tied + n) for n in range(distinct)
    ]


@pytest.mark.parametrize("page_size", [1, 7, 100])
def test_walking_all_pages_returns_every_record_once_despite_shared_timestamps(
    client, add_records, page_size
):
    add_records(tied_rows(tied=57, distinct=13))

    ids = walk_by_page(client, page_size)

    assert ids == stored_order()
    assert len(set(ids)) == len(ids) == 70


@pytest.mark.parametrize("page_size", [1, 7, 70])
@pytest.mark.parametrize("filters", [{}, {"source": "csv2"}], ids=["all", "csv2"])
def test_following_next_cursor_returns_every_record_once_despite_shared_timestamps(
    client, add_records, page_size, filters
):
    add_records(tied_rows(tied=57, distinct=13))

    ids = walk_by_cursor(client, page_size, **filters)

    conditions = [UnifiedRecord.source == filters["source"]] if filters else []
    assert ids == stored_order(*conditions)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("page_size", [5, 10])
def test_cursor_walk_is_stable_while_newer_records_arrive(client, add_records, page_size):
    add_records(tied_rows(tied=57, distinct=13))
    original = stored_order()

    def newer_rows_arrive():
        # Later timestamps, and more rows on the shared timestamp with higher ids.
        add_records(
            tied_rows(tied=10, distinct=0, start=1000)
            + [observation(2000 + n, timestamp=at(500 + n)) for n in range(15)]
        )

    ids = walk_by_cursor(client, page_size, after_first_page=newer_rows_arrive)

    assert len(stored_order()) == len(original) + 25
    assert ids == original, "the walk repeated or skipped one of the original rows"


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("path", "params", "names"),
    [
        ("/data", {"page_size": "0"}, ["page_size"]),
        ("/data", {"page_size": "1000"}, ["page_size"]),
        ("/data", {"page_size": "ten"}, ["page_size"]),
        ("/data", {"page": "0"}, ["page"]),
        ("/data", {"page": "-3"}, ["page"]),
        ("/data", {"page": "abc"}, ["page"]),
        ("/data", {"since": "not-a-date"}, ["since"]),
        ("/data", {"until": "2025-13-45"}, ["until"]),
        (
            "/data",
            {"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
            ["since", "until"],
        ),
        ("/data", {"source": "unknown"}, ["source"]),
        ("/data", {"metric": "unknown"}, ["metric"]),
        ("/data", {"cursor": "garbage"}, ["cursor"]),
        ("/data", {"cursor": forged_cursor("yesterday", 1)}, ["cursor"]),
        ("/data", {"cursor": "x" * 500}, ["cursor"]),
        ("/runs", {"limit": "0"}, ["limit"]),
        ("/runs", {"limit": "100000"}, ["limit"]),
        ("/runs", {"limit": "many"}, ["limit"]),
        ("/runs", {"source": "unknown"}, ["source"]),
        ("/runs", {"status": "DONE"}, ["status"]),
    ],
)
def test_bad_query_parameters_get_a_json_4xx_naming_the_parameter(client, path, params, names):
    assert_rejected_naming(client.get(path, query_string=params), *names)


# Contract: bad input is a 4xx, never a 500. These values parse, then overflow a datetime or a
# database column (or carry a NUL, which PostgreSQL text refuses).
@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"cursor": forged_cursor("2025-01-01T00:00:00+00:00", 10**30)}, "cursor"),
        ({"cursor": forged_cursor("2025-01-01T00:00:00+00:00", 2**63)}, "cursor"),
        ({"cursor": forged_cursor("0001-01-01T00:00:00+01:00", 1)}, "cursor"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ({"until": "9999-12-31T23:59:59-01:00"}, "until"),
        ({"asset": "bit\x00coin"}, "asset"),
        ({"symbol": "B\x00TC"}, "symbol"),
    ],
    ids=[
        "cursor-id-1e30",
        "cursor-id-2^63",
        "cursor-time-year-0",
        "since-year-0",
        "until-year-10000",
        "asset-nul",
        "symbol-nul",
    ],
)
def test_out_of_range_values_never_cause_a_server_error(client, add_records, params, name):
    add_records([observation(n) for n in range(3)])

    assert_not_a_server_error(client.get("/data", query_string=params), name)


# ---------------------------------------------------------------------------------------------
# X-Request-ID


@pytest.mark.parametrize(
    ("supplied", "echoed"),
    [
        ("req-123_abc.XYZ", True),
        ("a" * 128, True),
        (None, False),
        ("", False),
        ("a" * 300, False),
        ("has spaces in it", False),
        ("semi;colon", False),
    ],
    ids=["valid", "longest-valid", "absent", "empty", "300-chars", "spaces", "punctuation"],
)
def test_request_id_is_echoed_when_valid_and_generated_otherwise(client, supplied, echoed):
    headers = {} if supplied is None else {REQUEST_ID_HEADER: supplied}

    responses = [client.get("/data", headers=headers) for _ in range(2)]

    returned = [r.headers.get(REQUEST_ID_HEADER) for r in responses]
    for response, request_id in zip(responses, returned, strict=True):
        assert response.status_code == 200
        assert response.get_json()["meta"]["request_id"] == request_id
        assert re.fullmatch(r"[A-Za-z0-9._\-]{1,128}", request_id)
    if echoed:
        assert returned == [supplied, supplied]
    else:
        assert supplied not in returned
        assert returned[0] != returned[1], "each request gets its own generated id"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/no-such-path", 404),
        ("post", "/data", 405),
        ("delete", "/health", 405),
        ("get", "/runs/424242", 404),
        ("get", "/data?page=0", 422),
    ],
)
def test_errors_are_json_and_carry_the_request_id(client, method, path, status):
    response = getattr(client, method)(path, headers={REQUEST_ID_HEADER: "trace-err-1"})

    assert response.status_code == status
    assert response.is_json
    assert response.get_json()["code"] == status
    assert response.headers[REQUEST_ID_HEADER] == "trace-err-1"


# ---------------------------------------------------------------------------------------------
# GET /health


def test_health_before_any_run_is_healthy_with_no_last_run(client):
    body = get_json(client, "/health")

    assert (body["status"], body["database_connected"]) == ("healthy", True)
    assert body["last_etl_run"] is None
    assert body["sources"] == {}


def test_health_reports_the_last_run_after_a_successful_source(client, run_etl):
    run = run_etl("csv1")["csv1"]

    body = get_json(client, "/health")

    assert (body["status"], body["database_connected"]) == ("healthy", True)
    assert body["last_etl_run"]["status"] == "SUCCESS"
    assert body["last_etl_run"]["records_processed"] == run.rows_read == 14
    assert parse_time(body["last_etl_run"]["timestamp"]) == run.finished_at
    assert body["sources"]["csv1"]["status"] == "SUCCESS"
    assert parse_time(body["sources"]["csv1"]["finished_at"]) == run.finished_at


def test_health_is_degraded_while_a_sources_last_run_failed(client, run_etl, fail_csv1):
    run_etl("csv1")
    failed = fail_csv1()
    run_etl("csv2")  # a newer success elsewhere does not hide csv1's failure

    body = get_json(client, "/health")

    assert (body["status"], body["database_connected"]) == ("degraded", True)
    assert body["sources"]["csv1"]["status"] == "FAILED"
    assert body["sources"]["csv1"]["error"] == failed.error
    assert body["sources"]["csv2"]["status"] == "PARTIAL"
    assert body["last_etl_run"]["status"] == "PARTIAL"
    assert body["last_etl_run"]["records_processed"] == 16  # rows read, rejected ones included

    run_etl("csv1")
    assert get_json(client, "/health")["status"] == "healthy"


def test_health_answers_503_json_when_the_database_is_unreachable(offline_client):
    response = offline_client.get("/health")

    assert response.status_code == 503
    assert response.is_json
    body = response.get_json()
    assert (body["status"], body["database_connected"]) == ("unhealthy", False)
    assert response.headers[REQUEST_ID_HEADER]


@pytest.mark.parametrize("path", ["/data", "/stats", "/runs", "/runs/1"])
def test_reads_answer_503_json_when_the_database_is_unreachable(offline_client, path):
    response = offline_client.get(path)

    assert response.status_code == 503
    assert response.is_json
    assert response.get_json()["code"] == 503
    assert response.headers[REQUEST_ID_HEADER]


# ---------------------------------------------------------------------------------------------
# GET /stats


STATS_FIELDS = {
    "total_records",
    "rejected_records",
    "records_processed",
    "last_run",
    "last_status",
    "last_success_at",
    "last_failure_at",
    "run_counts",
}


def test_stats_list_every_source_even_before_any_run(client):
    body = get_json(client, "/stats")

    assert body["total_records"] == 0
    assert set(body["sources"]) == set(SOURCES)
    for stats in body["sources"].values():
        assert STATS_FIELDS <= set(stats)
        counts = [
            stats[name] for name in ("total_records", "rejected_records", "records_processed")
        ]
        assert counts == [0, 0, 0]
        latest = [stats[name] for name in ("last_run", "last_status", "last_success_at")]
        assert latest == [None, None, None]
        assert (stats["last_failure_at"], stats["run_counts"]) == (None, {})


def assert_stats_match_database(stats: dict, source: str, runs: list[EtlRun]) -> None:
    """Check one source's statistics against its rows and its runs."""
    assert stats["total_records"] == count(UnifiedRecord, UnifiedRecord.source == source)
    assert stats["rejected_records"] == count(RejectedRecord, RejectedRecord.source == source)
    assert stats["records_processed"] == sum(run.rows_read for run in runs)
    last = runs[-1] if runs else None
    assert stats["last_status"] == (last and last.status)
    assert (stats["last_run"] or {}).get("id") == (last and last.id)
    successes = [r.finished_at for r in runs if r.status in ("SUCCESS", "PARTIAL")]
    failures = [r.finished_at for r in runs if r.status == "FAILED"]
    assert parse_time(stats["last_success_at"]) == max(successes, default=None)
    assert parse_time(stats["last_failure_at"]) == max(failures, default=None)
    statuses = [run.status for run in runs]
    assert stats["run_counts"] == {status: statuses.count(status) for status in set(statuses)}


def test_stats_match_the_database_after_both_csv_sources(client, run_etl):
    runs = run_etl("csv1", "csv2")

    body = get_json(client, "/stats")

    assert set(body["sources"]) == set(SOURCES)
    assert body["total_records"] == count(UnifiedRecord) > 0
    for source in SOURCES:
        assert_stats_match_database(
            body["sources"][source], source, [runs[source]] if source in runs else []
        )
    csv2 = body["sources"]["csv2"]
    assert (csv2["last_status"], csv2["rejected_records"], csv2["records_processed"]) == (
        "PARTIAL",
        4,
        16,
    )
    assert body["sources"]["csv1"]["last_status"] == "SUCCESS"


def test_stats_keep_the_last_success_when_a_later_run_fails(client, run_etl, fail_csv1):
    succeeded = run_etl("csv1")["csv1"]
    failed = fail_csv1()

    stats = get_json(client, "/stats")["sources"]["csv1"]

    assert_stats_match_database(stats, "csv1", [succeeded, failed])
    assert stats["run_counts"] == {"SUCCESS": 1, "FAILED": 1}
    assert parse_time(stats["last_success_at"]) == succeeded.finished_at
    assert parse_time(stats["last_failure_at"]) == failed.finished_at


ORIGINAL_STATS_FIELDS = {"source", "total_records", "last_run", "status"}


def test_stats_also_answer_in_the_original_shape_before_any_run(client):
    body = get_json(client, "/stats")

    assert body["stats"] == [
        {"source": source, "total_records": 0, "last_run": None, "status": None}
        for source in sorted(SOURCES)
    ]


@pytest.mark.parametrize("history", ["both-csv-sources", "failure-after-success", "running"])
def test_stats_in_the_original_shape_agree_with_the_database(
    app, client, run_etl, fail_csv1, history
):
    if history == "both-csv-sources":
        run_etl("csv1", "csv2")
    elif history == "failure-after-success":
        run_etl("csv1")
        fail_csv1()
    else:
        run_etl("csv2")
        start_run(db.session, "csv2", "cli", app.config)

    body = get_json(client, "/stats")

    assert [entry["source"] for entry in body["stats"]] == sorted(SOURCES)
    for entry in body["stats"]:
        source = entry["source"]
        assert set(entry) == ORIGINAL_STATS_FIELDS
        assert entry["total_records"] == count(UnifiedRecord, UnifiedRecord.source == source)
        runs = db.session.scalars(
            sa.select(EtlRun).where(EtlRun.source == source).order_by(EtlRun.id)
        ).all()
        last = runs[-1] if runs else None
        assert entry["status"] == (last and last.status)
        assert parse_time(entry["last_run"]) == (last and (last.finished_at or last.started_at))
        richer = body["sources"][source]
        assert (entry["total_records"], entry["status"]) == (
            richer["total_records"],
            richer["last_status"],
        )
    statuses = {entry["source"]: entry["status"] for entry in body["stats"]}
    assert (
        statuses
        == {
            "both-csv-sources": {"coingecko_api": None, "csv1": "SUCCESS", "csv2": "PARTIAL"},
            "failure-after-success": {"coingecko_api": None, "csv1": "FAILED", "csv2": None},
            "running": {"coingecko_api": None, "csv1": None, "csv2": "RUNNING"},
        }[history]
    )


def test_the_original_stats_shape_is_in_the_openapi_document(client):
    spec = client.get("/openapi.json").get_json()

    stats = spec["components"]["schemas"]["Stats"]

    assert "stats" in stats["required"]
    assert {"stats", "sources", "total_records"} <= set(stats["properties"])


# ---------------------------------------------------------------------------------------------
# GET /runs and /runs/<id>


RUN_SPECS = [
    ("csv1", "SUCCESS"),
    ("csv2", "PARTIAL"),
    ("coingecko_api", "FAILED"),
    ("csv1", "FAILED"),
    ("csv2", "SUCCESS"),
    ("csv1", "SUCCESS"),
]


@pytest.mark.parametrize(
    ("params", "keep", "limit"),
    [
        ({}, lambda spec: True, None),
        ({"limit": 2}, lambda spec: True, 2),
        ({"limit": 1}, lambda spec: True, 1),
        ({"source": "csv1"}, lambda spec: spec[0] == "csv1", None),
        ({"status": "FAILED"}, lambda spec: spec[1] == "FAILED", None),
        ({"source": "csv1", "status": "SUCCESS"}, lambda spec: spec == ("csv1", "SUCCESS"), None),
        ({"source": "csv1", "limit": 2}, lambda spec: spec[0] == "csv1", 2),
        ({"source": "coingecko_api", "status": "SUCCESS"}, lambda spec: False, None),
    ],
    ids=[
        "all",
        "limit-2",
        "limit-1",
        "source",
        "status",
        "source-and-status",
        "source-and-limit",
        "no-match",
    ],
)
def test_run_log_is_newest_first_and_filtered(client, add_runs, params, keep, limit):
    ids = add_runs(*RUN_SPECS)
    expected = [i for i, spec in reversed(list(zip(ids, RUN_SPECS, strict=True))) if keep(spec)]

    runs = get_json(client, "/runs", **params)["runs"]

    assert [run["id"] for run in runs] == expected[:limit]
    for run in runs:
        assert (run["source"], run["status"]) == RUN_SPECS[ids.index(run["id"])]


def test_one_run_shows_its_status_counts_and_checkpoint(client, run_etl):
    run = run_etl("csv2")["csv2"]

    body = get_json(client, f"/runs/{run.id}")

    assert body["id"] == run.id
    assert (body["source"], body["status"], body["trigger"]) == ("csv2", "PARTIAL", "cli")
    counts = ("rows_read", "inserted", "updated", "unchanged", "rejected")
    assert [body[name] for name in counts] == [getattr(run, name) for name in counts]
    assert (body["rows_read"], body["rejected"]) == (16, 4)
    assert body["checkpoint_after"] == run.checkpoint_after
    assert parse_time(body["finished_at"]) == run.finished_at


# Ids past the column's range (2**31 on PostgreSQL, 2**63 on SQLite) are unknown ids too.
@pytest.mark.parametrize("run_id", [424242, 2**31, 2**63, 10**30])
def test_unknown_run_is_a_json_404(client, add_runs, run_id):
    add_runs(("csv1", "SUCCESS"))

    response = client.get(f"/runs/{run_id}")

    assert response.status_code == 404, response.get_data(as_text=True)
    assert response.is_json
    assert response.get_json()["code"] == 404


# ---------------------------------------------------------------------------------------------
# OpenAPI and docs


def test_openapi_document_lists_every_resource(client):
    response = client.get("/openapi.json")

    assert response.status_code == 200
    spec = json.loads(response.get_data(as_text=True))
    assert {"/data", "/health", "/stats", "/runs", "/runs/{run_id}"} <= set(spec["paths"])
    data_params = {p["name"] for p in spec["paths"]["/data"]["get"]["parameters"]}
    assert {
        "page",
        "page_size",
        "cursor",
        "source",
        "asset",
        "symbol",
        "metric",
        "since",
        "until",
    } <= data_params


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_interactive_docs_are_served(client, path):
    response = client.get(path)

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "openapi.json" in response.get_data(as_text=True)


@pytest.mark.parametrize("url", ["/stats", "/data", "/runs"])
def test_a_query_string_that_is_not_utf8_gets_a_clear_400(client, url):
    # WSGI hands the query string over as latin-1 text: "\xff" is the byte 0xFF.
    response = client.get(url, environ_overrides={"QUERY_STRING": "x=\xff"})

    assert response.status_code == 400
    assert response.get_json()["message"] == "the query string is not valid UTF-8 at byte 2"
