"""GET /metrics: what runs, upstream calls, drift and requests count, in a format promtool accepts.

Metrics are the process's own and tests share the process, so each test compares two scrapes:
what changed between them is what the test did.
"""

import subprocess
from collections import Counter
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from kasparro import create_app
from kasparro.etl.pipeline import run_source
from kasparro.etl.runs import SourceBusy, start_run
from kasparro.extensions import db
from kasparro.metrics import RequestMetrics, exposition
from kasparro.models import Asset, EtlRun, RunStatus, UnifiedRecord
from tests.coingecko_imitation import Fault

SOURCES = ("csv1", "csv2", "coingecko_api")
OUTCOMES = {"read": "rows_read", "inserted": "inserted", "updated": "updated",
            "unchanged": "unchanged", "rejected": "rejected"}  # fmt: skip
RATE_LIMIT_WAIT = 0.05  # seconds a 429 asks for, through x-ratelimit-reset


def scrape(client) -> Counter:
    """Return every sample /metrics serves, keyed by name and sorted labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    samples = Counter()
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def changed(before: Counter, after: Counter) -> dict:
    """Return the samples that moved between two scrapes, by how much."""
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def sample(name: str, **labels) -> tuple:
    """Return the key of one sample, as ``scrape`` writes it."""
    return name, tuple(sorted(labels.items()))


@pytest.fixture
def settings(settings):
    """Pace upstream calls so loosely that only a 429 makes a run wait; pace in-process."""
    return {**settings, "API_CALLS_PER_MINUTE": 1e12, "REDIS_URL": ""}


def test_a_run_of_each_source_is_counted_as_the_database_records_it(client, run_etl, coingecko):
    coingecko.fail_next(Fault(429, headers={"x-ratelimit-reset": str(RATE_LIMIT_WAIT)}))
    before = scrape(client)

    runs = run_etl(*SOURCES)

    after = scrape(client)
    moved = changed(before, after)
    for source, run in runs.items():
        assert moved[sample("kasparro_etl_runs_total", source=source, status=run.status)] == 1
        for outcome, column in OUTCOMES.items():
            rows = sample("kasparro_etl_rows_total", source=source, outcome=outcome)
            assert moved.get(rows, 0) == getattr(run, column), (source, outcome)
        duration = sample("kasparro_etl_run_duration_seconds_count", source=source)
        assert moved[duration] == 1
        seconds = sample("kasparro_etl_run_duration_seconds_sum", source=source)
        assert moved.get(seconds, 0) == pytest.approx(run.duration_ms / 1000)
        success = sample("kasparro_etl_last_success_timestamp_seconds", source=source)
        assert after[success] == run.finished_at.timestamp()
        stored = db.session.scalar(sa.select(sa.func.count()).where(UnifiedRecord.source == source))
        assert after[sample("kasparro_unified_records", source=source)] == stored > 0
    assert [run.status for run in runs.values()] == ["SUCCESS", "PARTIAL", "SUCCESS"]
    assert runs["csv2"].rejected > 0  # so that every outcome is seen counted, zero or not
    upstream = {key: value for key, value in moved.items() if key[0].startswith("kasparro_up")}
    assert upstream == {
        sample("kasparro_upstream_requests_total", source="coingecko_api", outcome="4xx"): 1,
        sample("kasparro_upstream_requests_total", source="coingecko_api", outcome="2xx"): 1,
        sample("kasparro_upstream_retries_total", source="coingecko_api"): 1,
        sample("kasparro_upstream_rate_limit_waits_total", source="coingecko_api"): 1,
        sample(
            "kasparro_upstream_rate_limit_wait_seconds_total", source="coingecko_api"
        ): pytest.approx(RATE_LIMIT_WAIT),
    }


def test_an_upstream_that_cannot_be_reached_counts_errors_and_a_failed_run(client, app):
    app.config.update(API_SOURCE_URL="http://127.0.0.1:9/api/v3/coins/markets", API_MAX_ATTEMPTS=2)
    before = scrape(client)

    run = run_source(db.session, "coingecko_api", app.config)

    moved = changed(before, scrape(client))
    assert run.status == "FAILED"
    assert moved[sample("kasparro_etl_runs_total", source="coingecko_api", status="FAILED")] == 1
    assert moved[sample("kasparro_upstream_requests_total", source="coingecko_api",
                        outcome="error")] == 2  # fmt: skip
    assert moved[sample("kasparro_upstream_retries_total", source="coingecko_api")] == 1
    waits = sample("kasparro_upstream_rate_limit_waits_total", source="coingecko_api")
    assert waits not in moved  # a lost connection is not a rate limit
    success = sample("kasparro_etl_last_success_timestamp_seconds", source="coingecko_api")
    assert success not in moved


def test_a_skipped_attempt_counts_as_a_run_without_rows_or_duration(client, app):
    start_run(db.session, "csv1", "cli", app.config)
    before = scrape(client)

    with pytest.raises(SourceBusy):
        run_source(db.session, "csv1", app.config)

    moved = changed(before, scrape(client))
    assert {key: n for key, n in moved.items() if key[0].startswith("kasparro_etl_")} == {
        sample("kasparro_etl_runs_total", source="csv1", status="SKIPPED"): 1
    }


def test_schema_drift_events_count_by_kind(client, run_etl, csv_paths):
    path = csv_paths["CSV1_PATH"]
    _, *rows = path.read_text().splitlines()
    lines = ["id,name,value,time_stamp,colour", *(f"{row},red" for row in rows if row)]
    path.write_text("\n".join(lines) + "\n")
    before = scrape(client)

    run = run_etl("csv1")["csv1"]

    moved = changed(before, scrape(client))
    assert Counter(event["kind"] for event in run.details["drift"]) == {
        "renamed": 1,
        "unexpected": 1,
    }
    drift = {dict(labels)["kind"]: n for (name, labels), n in moved.items()
             if name == "kasparro_schema_drift_events_total"}  # fmt: skip
    assert drift == {"renamed": 1, "unexpected": 1}
    assert run.status == "SUCCESS"


def test_requests_count_by_url_rule_method_and_status_never_by_raw_path(client, run_etl):
    runs = run_etl(*SOURCES)
    before = scrape(client)
    run_id = runs["csv1"].id

    assert client.get(f"/runs/{run_id}").status_code == 200
    assert client.get("/runs/987654").status_code == 404
    assert client.get("/runs/987654").status_code == 404
    assert client.get("/no/such/page/987654").status_code == 404
    assert client.get("/data?page_size=0").status_code == 422
    assert client.open("/data", method="BREW").status_code == 405

    moved = changed(before, scrape(client))
    requests = {
        dict(labels)["endpoint"] + " " + dict(labels)["method"] + " " + dict(labels)["status"]: n
        for (name, labels), n in moved.items()
        if name == "kasparro_http_requests_total"
    }
    assert requests == {
        "/runs/<int:run_id> GET 200": 1,
        "/runs/<int:run_id> GET 404": 2,
        "unmatched GET 404": 1,
        "/data GET 422": 1,
        "unmatched other 405": 1,  # no rule answers that method
        "/metrics GET 200": 1,  # the first scrape
    }
    latency = sample("kasparro_http_request_duration_seconds_count",
                     endpoint="/runs/<int:run_id>", method="GET")  # fmt: skip
    assert moved[latency] == 3


def test_label_values_never_hold_run_asset_or_request_ids(client, run_etl):
    runs = run_etl(*SOURCES)
    request_id = client.get("/data", headers={"X-Request-ID": "req-label-check-1"}).headers[
        "X-Request-ID"
    ]
    for run in runs.values():
        client.get(f"/runs/{run.id}")
    for asset in db.session.scalars(sa.select(Asset.id)):
        client.get(f"/data?asset={asset}")

    values = {
        value
        for (name, labels) in scrape(client)
        if name.startswith("kasparro_")  # not python_info's version numbers
        for _, value in labels
    }

    run_ids = {str(run_id) for run_id in db.session.scalars(sa.select(EtlRun.id))}
    assets = set(db.session.scalars(sa.select(Asset.id)))
    assert assets and run_ids
    for value in values:
        assert value not in run_ids and value not in assets, value
        assert not any(asset in value for asset in assets), value
        assert request_id not in value


def test_promtool_accepts_the_metrics_after_runs_and_requests(client, run_etl, coingecko):
    coingecko.fail_next(Fault(429, headers={"x-ratelimit-reset": str(RATE_LIMIT_WAIT)}))
    run_etl(*SOURCES)
    client.get("/data")
    client.get("/no/such/page")

    text = client.get("/metrics").get_data(as_text=True)

    assert "kasparro_unified_records{" in text and "kasparro_etl_rows_total{" in text
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # no lint complaint either


@pytest.mark.parametrize(
    "unreachable",
    ["sqlite:////nonexistent-directory/etl.db", "postgresql+psycopg://postgres@127.0.0.1:1/none"],
)
def test_metrics_are_served_without_the_rows_when_the_database_is_down(unreachable):
    app = create_app({"SQLALCHEMY_DATABASE_URI": unreachable, "LOG_LEVEL": "ERROR"})

    response = app.test_client().get("/metrics")

    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "kasparro_http_requests_total" in text
    assert "kasparro_unified_records" not in text
    with app.app_context():
        db.engine.dispose()


def test_a_method_outside_http_is_one_series_whatever_its_name():
    metrics = RequestMetrics()
    before = request_counts()

    for method in ("BREW", "PROPFIND", "X" * 40):
        metrics.observe("/data", method, 405, 0.001)

    assert changed(before, request_counts()) == {
        (("endpoint", "/data"), ("method", "other"), ("status", "405")): 3
    }
    assert len(metrics._children) == 1  # nor does each name keep an entry in memory


def request_counts() -> Counter:
    """Return this process's request counts by their labels, as /metrics would serve them."""
    return Counter(
        {
            tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition().decode())
            for sample in family.samples
            if sample.name == "kasparro_http_requests_total"
        }
    )


def test_the_last_success_comes_from_the_database_so_a_restart_loses_nothing(client, app):
    # A success this process never saw (another role's, or one before a restart) is served.
    finished = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for status, hour in ((RunStatus.SUCCESS, 3), (RunStatus.FAILED, 5)):
        db.session.add(
            EtlRun(
                source="csv2",
                status=status,
                trigger="schedule",
                started_at=finished.replace(hour=hour - 1),
                finished_at=finished.replace(hour=hour),
            )
        )
    db.session.commit()

    after = scrape(client)

    success = sample("kasparro_etl_last_success_timestamp_seconds", source="csv2")
    assert after[success] == finished.timestamp()
    never = sample("kasparro_etl_last_success_timestamp_seconds", source="csv1")
    assert never not in after
