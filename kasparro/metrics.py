"""Prometheus metrics of the API, the ETL runs and the upstream calls, and their text exposition.

Metric names are a contract (dashboards query them) and every label has few values: URL rules,
methods, statuses, sources, outcomes; never a run, asset or request id.

With ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus-client keeps each process's values in files
there and the exposition merges every file: what each gunicorn worker or Celery pool process
counted, including processes that have exited. The variable must be set before prometheus-client
is first imported (docker/entrypoint.sh and ``make run`` export it); without it, a process serves
its own values. Where several processes answer for one endpoint without it (``gunicorn -w 2``, a
prefork Celery worker), each would serve a part: the endpoint answers 503 instead, saying why.
"""

import functools
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import sqlalchemy as sa
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    ThreadingWSGIServer,
    start_http_server,
)
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from kasparro.models import EtlRun, RunStatus, RunSummary, UnifiedTotal

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus 2 reads
# prometheus-client chose where values live when it was imported (PROMETHEUS_MULTIPROC_DIR set:
# in files the role's processes share). Serve from there, even if the variable was set
# afterwards (by a .env file, say).
SHARED_VALUES = values.ValueClass is not values.MutexValue
# A ``_created`` series per labelled child doubles the output, and the merged multiprocess
# exposition has none: both modes serve the same series.
disable_created_metrics()

# Why a server of several processes serves no metrics when they share no directory.
NOT_SHARED_MESSAGE = (
    "metrics are not served: this server runs several processes and PROMETHEUS_MULTIPROC_DIR"
    " was not set when it started, so each process would answer with its own counts only."
    " Start it with PROMETHEUS_MULTIPROC_DIR set to an empty directory of its own"
    " (docker/entrypoint.sh and make run do), or with a single process"
)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ENDPOINT = "unmatched"
ROW_OUTCOMES = ("read", "inserted", "updated", "unchanged", "rejected")

HTTP_REQUESTS = Counter(
    "kasparro_http_requests_total",
    "HTTP requests answered, by URL rule, method and status",
    ["endpoint", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "kasparro_http_request_duration_seconds",
    "Time from a request's arrival to its answer, by URL rule and method",
    ["endpoint", "method"],
    # A kept answer takes well under a millisecond; a cold /data page tens of milliseconds.
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ETL_RUNS = Counter(
    "kasparro_etl_runs_total", "ETL runs finished, by source and final status", ["source", "status"]
)
ETL_ROWS = Counter(
    "kasparro_etl_rows_total",
    "Rows of finished ETL runs: read, and inserted, updated, unchanged or rejected",
    ["source", "outcome"],
)
ETL_RUN_DURATION = Histogram(
    "kasparro_etl_run_duration_seconds",
    "Duration of finished ETL runs (skipped attempts aside), by source",
    ["source"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
UPSTREAM_REQUESTS = Counter(
    "kasparro_upstream_requests_total",
    "Calls to an upstream, by outcome: the HTTP status class, or error when none came back",
    ["source", "outcome"],
)
UPSTREAM_RETRIES = Counter(
    "kasparro_upstream_retries_total", "Upstream calls tried again after a failure", ["source"]
)
UPSTREAM_RATE_LIMIT_WAITS = Counter(
    "kasparro_upstream_rate_limit_waits_total",
    "Waits before an upstream call: for the pacing slot, or as a 429 asked",
    ["source"],
)
UPSTREAM_RATE_LIMIT_WAIT_SECONDS = Counter(
    "kasparro_upstream_rate_limit_wait_seconds_total",
    "Seconds spent in those waits",
    ["source"],
)
SCHEMA_DRIFT_EVENTS = Counter(
    "kasparro_schema_drift_events_total",
    "Schema drift events of finished runs, by kind (renamed, missing, unexpected, reordered)",
    ["source", "kind"],
)


class RequestMetrics:
    """Count and time answered requests, with each label set's children looked up once."""

    def __init__(self) -> None:
        self._children: dict[tuple, tuple] = {}

    def observe(self, rule: str | None, method: str, status: int, seconds: float) -> None:
        """Count one answer to ``method`` on URL rule ``rule`` (None: no rule matched)."""
        # The method is the client's text: any other value would be a new series, and entry, each.
        method = method if method in HTTP_METHODS else "other"
        key = (rule, method, status)
        children = self._children.get(key)
        if children is None:
            endpoint = rule or UNMATCHED_ENDPOINT
            children = self._children.setdefault(
                key,
                (
                    HTTP_REQUESTS.labels(endpoint, method, str(status)),
                    HTTP_REQUEST_DURATION.labels(endpoint, method),
                ),
            )
        count, duration = children
        count.inc()
        duration.observe(seconds)


def record_run(run: EtlRun) -> None:
    """Count a finished run of a source: its status, rows, duration, success time and drift."""
    source, status = run.source, RunStatus(run.status)
    ETL_RUNS.labels(source, status).inc()
    if status == RunStatus.SKIPPED:  # it did nothing: its zero duration would skew the histogram
        return
    counts = (run.rows_read, run.inserted, run.updated, run.unchanged, run.rejected)
    for outcome, rows in zip(ROW_OUTCOMES, counts, strict=True):
        ETL_ROWS.labels(source, outcome).inc(rows or 0)
    ETL_RUN_DURATION.labels(source).observe((run.duration_ms or 0) / 1000)
    for event in (run.details or {}).get("drift", ()):
        SCHEMA_DRIFT_EVENTS.labels(source, event["kind"]).inc()


def record_upstream_answer(source: str, status: int | None) -> None:
    """Count one upstream call by its HTTP status class (``2xx``...), or ``error`` for none."""
    outcome = "error" if status is None else f"{status // 100}xx"
    UPSTREAM_REQUESTS.labels(source, outcome).inc()


def record_upstream_retry(source: str) -> None:
    """Count one upstream call about to be tried again."""
    UPSTREAM_RETRIES.labels(source).inc()


def record_rate_limit_wait(source: str, seconds: float) -> None:
    """Count one wait imposed by an upstream's rate limit, and its length."""
    UPSTREAM_RATE_LIMIT_WAITS.labels(source).inc()
    UPSTREAM_RATE_LIMIT_WAIT_SECONDS.labels(source).inc(seconds)


@dataclass(frozen=True)
class DatabaseFacts:
    """What the database says at scrape time: each source's rows and its last success.

    They are read from the maintained tables (one small query each), not kept by a process: a
    role that restarts, or a success recorded by another role, loses nothing.
    """

    records: Mapping[str, int]
    last_success: Mapping[str, datetime | None]


def database_facts(session: Session, sources: Iterable[str]) -> DatabaseFacts:
    """Return each source's rows in unified_records and when its last successful run finished."""
    totals = dict(
        session.execute(
            sa.select(UnifiedTotal.source, sa.func.sum(UnifiedTotal.records)).group_by(
                UnifiedTotal.source
            )
        ).all()
    )
    successes = dict(
        session.execute(sa.select(RunSummary.source, RunSummary.last_success_at)).tuples().all()
    )
    return DatabaseFacts(
        records={source: int(totals.get(source) or 0) for source in sources},
        last_success={source: successes.get(source) for source in sources},
    )


class _DatabaseFacts(Collector):
    def __init__(self, facts: DatabaseFacts):
        self.facts = facts

    def collect(self):
        rows = GaugeMetricFamily(
            "kasparro_unified_records",
            "Rows in unified_records per source, read from the database at scrape time",
            labels=["source"],
        )
        for source, count in sorted(self.facts.records.items()):
            rows.add_metric([source], count)
        yield rows
        success = GaugeMetricFamily(
            "kasparro_etl_last_success_timestamp_seconds",
            "When the source's last successful (SUCCESS or PARTIAL) run finished, as a Unix time,"
            " read from the database at scrape time",
            labels=["source"],
        )
        for source, finished in sorted(self.facts.last_success.items()):
            if finished is not None:
                success.add_metric([source], finished.timestamp())
        yield success


def prepare_shared_values(directory: str) -> None:
    """Make the directory this role's processes share values in, if they share them.

    ``create_app`` calls this first, so that no process records a value before it exists.
    """
    if SHARED_VALUES:
        os.makedirs(directory, exist_ok=True)


@functools.cache
def process_registry() -> CollectorRegistry:
    """Return what this role exposes: every process's files when multiprocess, else its own."""
    if not SHARED_VALUES:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # in the directory prometheus-client writes to
    return registry


def exposition(facts: DatabaseFacts | None = None) -> bytes:
    """Return the role's metrics in Prometheus text format, with the database's facts if given."""
    text = generate_latest(process_registry())
    if facts is not None:
        database = CollectorRegistry()
        database.register(_DatabaseFacts(facts))
        text += generate_latest(database)
    return text


def split_between_processes(several_processes: bool) -> bool:
    """Return whether a server of ``several_processes`` would serve each one's values apart."""
    return several_processes and not SHARED_VALUES


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # Prometheus asks every few seconds: no line each
        pass


def _refuse_split_metrics(environ, start_response):
    body = json.dumps(
        {"code": 503, "status": "Service Unavailable", "message": NOT_SHARED_MESSAGE}
    ).encode()
    start_response(
        "503 Service Unavailable",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def serve_worker_metrics(port: int, pool_processes: bool) -> WSGIServer:
    """Serve the metrics on ``port`` from a thread; pool_processes: tasks run in other processes.

    Those processes' values reach this one only through the shared directory: without it, every
    scrape answers 503 with the reason, rather than a worker that seems never to run anything.
    """
    if not split_between_processes(pool_processes):
        server, _ = start_http_server(port, registry=process_registry())
        return server
    server = make_server(
        "", port, _refuse_split_metrics, ThreadingWSGIServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def forget_process(pid: int) -> None:
    """Drop the live-gauge files of an exited process (its counters stay counted)."""
    if SHARED_VALUES:
        mark_process_dead(pid)
