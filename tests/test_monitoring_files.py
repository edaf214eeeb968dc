"""The Prometheus scrape configuration and the Grafana dashboard, checked with the real promtool."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "kasparro.json"
METRICS_TOKEN_FILE = "/run/secrets/metrics_token"  # where compose mounts the API's METRICS_TOKEN

# Every metric Kasparro exposes, by type: the contract between kasparro/metrics.py and the
# dashboard, kept here alone so that it can be compared with what /metrics serves.
METRICS = {
    "kasparro_http_requests_total": "counter",
    "kasparro_http_request_duration_seconds": "histogram",
    "kasparro_etl_runs_total": "counter",
    "kasparro_etl_rows_total": "counter",
    "kasparro_etl_run_duration_seconds": "histogram",
    "kasparro_etl_last_success_timestamp_seconds": "gauge",
    "kasparro_upstream_requests_total": "counter",
    "kasparro_upstream_retries_total": "counter",
    "kasparro_upstream_rate_limit_waits_total": "counter",
    "kasparro_upstream_rate_limit_wait_seconds_total": "counter",
    "kasparro_schema_drift_events_total": "counter",
    "kasparro_unified_records": "gauge",
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
# Grafana replaces these before it sends a query; the values stand in for any it would choose.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "6h"}
ALL_SOURCES = ".*"  # what the source variable's "All" sends
# PromQL's words that are neither functions nor metrics.
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                   "group_left", "group_right"}  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess:
    """Run Debian's promtool with ``args``."""
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make tools` installs Debian's prometheus package"
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60)


def panels(dashboard: dict) -> list[dict]:
    """Return every panel of ``dashboard`` that is not a row, rows' own panels included."""
    found = []
    for panel in dashboard["panels"]:
        found += panels(panel) if panel["type"] == "row" else [panel]
    return found


def grafana_expanded(expr: str) -> str:
    """Return ``expr`` as Grafana sends it, with the variables given values."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr.replace("${source}", ALL_SOURCES).replace("$source", ALL_SOURCES)


def metric_names(expr: str) -> set[str]:
    """Return the metric names that the PromQL expression ``expr`` selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values and regular expressions
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # label matchers, ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return set(names) - PROMQL_KEYWORDS


def exposed_series(name: str) -> set[str]:
    """Return the series names a metric of METRICS is served under."""
    if METRICS[name] == "histogram":
        return {name + suffix for suffix in HISTOGRAM_SERIES}
    return {name}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    """Return the dashboard JSON, parsed."""
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def queries(dashboard) -> dict[str, str]:
    """Return every panel query's expression by ``<panel title> <refId>``."""
    return {
        f"{panel['title']} {target['refId']}": target["expr"]
        for panel in panels(dashboard)
        for target in panel["targets"]
    }


@pytest.fixture(scope="module")
def compose_services() -> dict:
    """Return the services of docker-compose.yml as written (anchors merged, nothing resolved)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_promtool_accepts_the_scrape_configuration(tmp_path):
    # The token file is a compose secret, there only in the container: a stand-in takes its place.
    written = PROMETHEUS_CONFIG.read_text()
    assert METRICS_TOKEN_FILE in written
    token = tmp_path / "metrics_token"
    token.write_text("stand-in-token\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(written.replace(METRICS_TOKEN_FILE, str(token)))

    result = promtool("check", "config", str(config))

    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_every_api_and_worker_replica_where_compose_serves_metrics(
    compose_services,
):
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    scraped = {
        (job["job_name"], name, lookup["port"], job.get("metrics_path", "/metrics"))
        for job in config["scrape_configs"]
        for lookup in job.get("dns_sd_configs", ())
        for name in lookup["names"]
    }

    assert scraped == {
        ("kasparro-api", "api", 8000, "/metrics"),
        ("kasparro-worker", "worker", 9808, "/metrics"),
    }
    assert compose_services["api"]["environment"]["PORT"] == "8000"
    assert compose_services["worker"]["environment"]["WORKER_METRICS_PORT"] == "9808"
    assert compose_services["worker"]["expose"] == ["9808"]


def test_every_panel_query_is_valid_promql(queries, tmp_path):
    rules = [
        {"record": f"dashboard:panel_{number}", "expr": grafana_expanded(expr)}
        for number, expr in enumerate(queries.values())
    ]
    assert not [rule["expr"] for rule in rules if "$" in rule["expr"]]  # every variable known
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = promtool("check", "rules", str(rules_file))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_rejects_a_query_that_is_not_promql(tmp_path):
    broken = "sum by (source) (rate(kasparro_etl_runs_total[5m])"
    rules_file = tmp_path / "broken_rules.yml"
    rules_file.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": broken}]}]})
    )

    result = promtool("check", "rules", str(rules_file))

    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


def test_metric_names_are_found_in_promql():
    expr = (
        'histogram_quantile(0.5, sum by (le) (rate(kasparro_a_bucket{source=~"x|y"}[5m])))'
        " / on (source) group_left max(kasparro_b) - time() > bool 0 or up offset 5m"
    )

    assert metric_names(expr) == {"kasparro_a_bucket", "kasparro_b", "up"}


def test_the_dashboard_queries_every_exposed_metric_and_nothing_else(queries):
    used = set().union(*(metric_names(expr) for expr in queries.values()))
    exposed = set().union(*(exposed_series(name) for name in METRICS))

    assert sorted(used - exposed) == []
    for name in METRICS:
        assert used & exposed_series(name), f"no panel shows {name}"


def test_every_panel_reads_the_chosen_data_source_and_the_etl_panels_the_chosen_sources(
    dashboard,
):
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    source = variables["source"]

    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert source["query"]["query"] == "label_values(kasparro_etl_runs_total, source)"
    assert (source["includeAll"], source["multi"], source["allValue"]) == (True, True, ".*")
    for panel in panels(dashboard):
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            if re.search(r"kasparro_(etl|upstream|schema|unified)_", target["expr"]):
                assert 'source=~"$source"' in target["expr"], (panel["title"], target["refId"])


def test_the_panels_fit_the_grid_without_overlapping(dashboard):
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & area, panel["title"]
        cells |= area
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_reads_prometheus_and_the_dashboards_where_compose_puts_them(compose_services):
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/kasparro.yml").read_text())
    mounts = dict(volume.split(":")[:2] for volume in compose_services["grafana"]["volumes"])
    prometheus_ports = compose_services["prometheus"]["ports"]

    assert [source["url"] for source in datasources["datasources"]] == ["http://prometheus:9090"]
    assert prometheus_ports[0].endswith(":9090")
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./deploy/grafana/dashboards"] == providers["providers"][0]["options"]["path"]
    # Grafana's step for $__rate_interval is the scrape interval.
    scrape_interval = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]
    assert datasources["datasources"][0]["jsonData"]["timeInterval"] == scrape_interval


def test_the_metric_list_is_what_metrics_serves_after_runs(client, run_etl):
    run_etl("csv1", "coingecko_api")
    client.get("/data")

    served = {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
        if family.name.startswith("kasparro_")
    }

    assert served == METRICS
