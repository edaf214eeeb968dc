"""Smoke test: the whole stack as local processes, a worker killed mid-run, a pass/fail report.

Starts the CoinGecko imitation in-process, then the api (gunicorn), worker and beat roles through
docker/entrypoint.sh, on a PostgreSQL database and a Redis queue of their own. Triggers runs over
HTTP, checks /data, /health and /stats, kills the worker with SIGKILL in the middle of a run,
starts another and checks that the run completes with no duplicates and no gaps. Everything it
started is stopped, and its database dropped, whatever happens.

Run from the repository root: ``.venv/bin/python scripts/smoke.py`` (or ``make smoke``).
"""

import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psycopg
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import processes  # noqa: E402
from tests.coingecko_imitation import CoinGeckoImitation, make_coins  # noqa: E402

PG_SERVER = "postgres@127.0.0.1:5432"  # trust auth on loopback
REDIS_URL = "redis://127.0.0.1:6379/14"  # reserved for the smoke run
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # kombu's Redis transport, shared
RESULT_PREFIX = "celery-task-meta-"  # Celery's Redis result backend; children are [[[id, _], _]]
COINS = 250
CSV_TOTALS = {"csv1": 14, "csv2": 12}
FIRST_RUN_STATUSES = {"coingecko_api": "SUCCESS", "csv1": "SUCCESS", "csv2": "PARTIAL"}
PAGE_SIZE = 100
LOG_TAIL_LINES = 20


@dataclass
class Check:
    """One line of the report; ``role`` names the process whose log explains a failure."""

    name: str
    ok: bool
    detail: str
    role: str | None


class Report:
    """The checks made so far, printed as they are made."""

    def __init__(self):
        self.checks: list[Check] = []

    def check(self, name: str, ok: bool, detail: str = "", role: str | None = "api") -> bool:
        """Record and print one check; return whether it passed."""
        self.checks.append(Check(name, bool(ok), detail, role))
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""), flush=True)
        return bool(ok)

    def failures(self) -> list[Check]:
        """Return the checks that failed."""
        return [check for check in self.checks if not check.ok]

    def summary(self) -> str:
        """Return the final line: how many checks passed and failed."""
        failed = len(self.failures())
        return f"smoke: {len(self.checks) - failed} passed, {failed} failed"


def pg_url(database: str, scheme: str = "postgresql") -> str:
    """Return the URL of a database on the machine's PostgreSQL."""
    return f"{scheme}://{PG_SERVER}/{database}"


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last lines of a log file, each cut to a readable width."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(line[:300] for line in text.splitlines()[-lines:])


class Stack:
    """Everything one smoke run starts: database, queue, imitation, processes; see close()."""

    def __init__(self, workdir: Path):
        suffix = secrets.token_hex(4)
        self.workdir = workdir
        self.database = f"kasparro_smoke_{os.getpid()}_{suffix}"
        self.queue = f"kasparro-smoke-{suffix}"
        self.token = secrets.token_hex(16)
        self.base_url = f"http://127.0.0.1:{processes.free_port()}"
        self.imitation = CoinGeckoImitation(make_coins(COINS))
        self.processes: list[tuple[str, processes.ManagedProcess]] = []
        self.cleanup = ExitStack()  # undoes what open() and start() did, last first

    def env(self) -> dict[str, str]:
        """Return the environment every role shares."""
        csv_copies = {}
        for setting, name in (("CSV1_PATH", "source1.csv"), ("CSV2_PATH", "source2.csv")):
            csv_copies[setting] = str(self.workdir / name)
        return {
            **os.environ,
            **csv_copies,
            "DATABASE_URL": pg_url(self.database, "postgresql+psycopg"),
            "CELERY_BROKER_URL": REDIS_URL,
            "CELERY_RESULT_BACKEND": REDIS_URL,
            "CELERY_QUEUE": self.queue,
            "CELERY_VISIBILITY_TIMEOUT": "10",
            "CELERY_UNACKED_RESTORE_SECONDS": "1",
            "ETL_ADMIN_TOKEN": self.token,
            "ETL_RUN_ON_START": "0",
            "API_SOURCE_URL": self.imitation.url,
            "API_PER_PAGE": "25",
            "API_MAX_PAGES": "10",
            # The imitation is local: no need for CoinGecko's pacing, which would make a run
            # outlast the 10 s visibility timeout; nor for the public limit on the API's clients.
            "API_CALLS_PER_MINUTE": "6000",
            "PUBLIC_RATE_LIMIT": "6000/minute",
            "ETL_BATCH_SIZE": "25",
            "LOG_LEVEL": "INFO",
            "PORT": self.base_url.rsplit(":", 1)[1],
            "WORKER_CONCURRENCY": "1",
            "WORKER_METRICS_PORT": str(processes.free_port()),
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "metrics"),
            "BEAT_SCHEDULE_FILE": str(self.workdir / "beat-schedule"),
            **{f"SCHEDULE_{s.upper()}_SECONDS": "3600" for s in FIRST_RUN_STATUSES},
        }

    def open(self) -> None:
        """Start the imitation, create the database and copy the CSV feeds."""
        self.cleanup.enter_context(self.imitation)
        with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self.cleanup.callback(self.drop_database)
        self.cleanup.callback(self.clear_queue)
        for name in ("source1.csv", "source2.csv"):
            shutil.copy(ROOT / "data" / name, self.workdir / name)

    def start(self, role: str, ready: Callable[[str], bool]) -> processes.ManagedProcess:
        """Start an entrypoint role in its own process group and wait until it is ready."""
        number = sum(1 for started, _ in self.processes if started == role) + 1
        log_path = self.workdir / f"{role}-{number}.log"
        process = processes.ManagedProcess(
            [processes.ENTRYPOINT, role], processes.venv_path_env(self.env()), log_path, ready
        )
        # Registered before start(), so that it is stopped whatever happens.
        self.processes.append((role, process))
        self.cleanup.callback(process.stop)
        return process.start(timeout=90)

    def latest(self, role: str) -> processes.ManagedProcess:
        """Return the most recently started process of ``role``."""
        return [process for started, process in self.processes if started == role][-1]

    def get(self, path: str, **params) -> requests.Response:
        """GET a path of the API."""
        return requests.get(self.base_url + path, params=params, timeout=10)

    def trigger(self, sources: list[str] | None = None) -> requests.Response:
        """POST /etl/run with the admin token, for ``sources`` or every source."""
        return requests.post(
            f"{self.base_url}/etl/run",
            json={"sources": sources} if sources else None,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )

    def wait_for_run(self, run_id: int, timeout: float = 60) -> dict:
        """Poll GET /runs/<id> until the run is no longer RUNNING; return it."""

        def finished():
            run = self.get(f"/runs/{run_id}").json()
            return run if run["status"] != "RUNNING" else None

        return processes.eventually(finished, timeout, f"run {run_id} to finish", interval=0.5)

    def sql(self, query: str) -> list[tuple]:
        """Return the rows of a query on the smoke database."""
        with psycopg.connect(pg_url(self.database)) as conn:
            return conn.execute(query).fetchall()

    def drop_database(self) -> None:
        """Drop the smoke database, closing any connection left to it."""
        with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def clear_queue(self) -> None:
        """Delete the smoke queue, its unacknowledged messages and its tasks' results."""
        client = redis.Redis.from_url(REDIS_URL)
        try:
            self.forget_unacked(client)
            keys = [*client.scan_iter(match=f"*{self.queue}*"), *self.result_keys(client)]
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    def forget_unacked(self, client: redis.Redis) -> None:
        """Remove this queue's messages from kombu's unacked index, lest a worker restore them."""
        for tag, entry in client.hscan_iter(UNACKED):
            if json.loads(entry)[2] == self.queue:  # [message, exchange, routing key]
                client.pipeline().hdel(UNACKED, tag).zrem(UNACKED_INDEX, tag).execute()

    def result_keys(self, client: redis.Redis) -> list[str]:
        """Return the result keys of every run's chain: its first task's and its children's."""
        try:
            task_ids = [task_id for (task_id,) in self.sql("SELECT task_id FROM etl_runs")]
        except psycopg.Error:  # the database was never migrated
            return []
        keys = []
        for task_id in filter(None, task_ids):
            key = f"{RESULT_PREFIX}{task_id}"
            children = json.loads(client.get(key) or "{}").get("children") or []
            keys += [key, *(f"{RESULT_PREFIX}{child[0][0]}" for child in children)]
        return keys

    def close(self) -> None:
        """Stop every process, clear the queue, drop the database and stop the imitation."""
        self.cleanup.close()


def first_line(exc: BaseException) -> str:
    """Return an exception's type and the first line of its message."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def start_stack(stack: Stack, report: Report) -> None:
    """Create the database, start the imitation, the api (which migrates), a worker and beat."""
    stack.open()
    stack.start("api", lambda log: processes.answers(f"{stack.base_url}/health"))
    report.check("api role serves /health", True, stack.base_url)
    stack.start("worker", processes.worker_ready)
    report.check("worker role ready", True, role="worker")
    stack.start("beat", lambda log: "beat: Starting" in log)
    report.check("beat role started", True, role="beat")


def queued_runs(stack: Stack, report: Report, sources: list[str] | None) -> list[dict]:
    """Trigger runs over HTTP, check the 202 and return the queued runs."""
    response = stack.trigger(sources)
    runs = response.json().get("runs", []) if response.ok else []
    expected = sources or list(FIRST_RUN_STATUSES)
    queued = sorted(run["source"] for run in runs)
    report.check(
        f"POST /etl/run {'all sources' if not sources else ' '.join(sources)}",
        response.status_code == 202 and queued == sorted(expected),
        f"{response.status_code}, runs {[run['run_id'] for run in runs]}",
    )
    return runs


def walk_data(stack: Stack) -> tuple[int, list[int]]:
    """Return /data's total and every id met by following next_cursor from the first page."""
    body = stack.get("/data", page_size=PAGE_SIZE).json()
    total, ids = body["pagination"]["total"], []
    for _ in range(total // PAGE_SIZE + 2):
        ids += [item["id"] for item in body["data"]]
        cursor = body["pagination"]["next_cursor"]
        if not cursor:
            return total, ids
        body = stack.get("/data", page_size=PAGE_SIZE, cursor=cursor).json()
    raise RuntimeError(f"/data cursor walk did not end after {len(ids)} rows")


def check_data(stack: Stack, report: Report, api_rows: int) -> None:
    """Check /data's total and that paging by cursor meets every row exactly once."""
    expected = api_rows + sum(CSV_TOTALS.values())
    total, ids = walk_data(stack)
    report.check("GET /data total", total == expected, f"{total} (expected {expected})")
    report.check(
        "GET /data cursor paging meets each row once",
        len(ids) == len(set(ids)) == expected,
        f"{len(ids)} ids, {len(set(ids))} distinct",
    )


def first_run(stack: Stack, report: Report) -> None:
    """Run every source over HTTP, then check /data, /health and /stats."""
    runs = queued_runs(stack, report, None)
    statuses = {run["source"]: stack.wait_for_run(run["run_id"])["status"] for run in runs}
    report.check(
        "first runs finish as expected",
        statuses == FIRST_RUN_STATUSES,
        ", ".join(f"{source} {status}" for source, status in sorted(statuses.items())),
        role="worker",
    )
    check_data(stack, report, api_rows=3 * COINS)

    health = stack.get("/health").json()
    report.check(
        "GET /health healthy, database and broker connected",
        (health["status"], health["database_connected"], health["broker_connected"])
        == ("healthy", True, True),
        f"{health['status']}, database {health['database_connected']}, "
        f"broker {health['broker_connected']}",
    )

    stats = stack.get("/stats").json()["sources"]
    totals = {source: stats[source]["total_records"] for source in stats}
    expected = {"coingecko_api": 3 * COINS, **CSV_TOTALS}
    report.check("GET /stats per-source totals", totals == expected, str(totals))


def kill_worker_mid_run(stack: Stack, report: Report) -> None:
    """Move every price, start a run, SIGKILL the worker mid-run and let a new worker finish it."""
    imitation = stack.imitation
    for coin in imitation.coins:
        imitation.move_price(coin["id"], coin["current_price"] + 1)
    imitation.delay_seconds = 0.5
    served_before = len(imitation.page_requests())
    runs = queued_runs(stack, report, ["coingecko_api"])
    if not runs:
        raise RuntimeError("no run was queued")
    run_id = runs[0]["run_id"]
    processes.eventually(
        lambda: len(imitation.page_requests()) - served_before >= 3, 30, "3 pages served"
    )
    stack.latest("worker").kill()
    served = len(imitation.page_requests()) - served_before
    status = stack.get(f"/runs/{run_id}").json()["status"]
    report.check(
        "worker SIGKILLed mid-run, run still RUNNING",
        status == "RUNNING",
        f"run {run_id} {status} after {served} of 10 pages",
        role="worker",
    )
    imitation.delay_seconds = 0
    started = time.monotonic()
    stack.start("worker", processes.worker_ready)
    run = stack.wait_for_run(run_id, timeout=90)
    report.check(
        "new worker completes the run",
        run["status"] == "SUCCESS",
        f"{run['status']} {time.monotonic() - started:.1f}s after restart, "
        f"inserted {run.get('inserted')}",
        role="worker",
    )


def no_duplicates_no_gaps(stack: Stack, report: Report) -> None:
    """Check in SQL and over HTTP that the killed run left no duplicates and no gaps."""
    [(duplicates,)] = stack.sql(
        "SELECT count(*) FROM (SELECT 1 FROM unified_records"
        " GROUP BY source, external_id, metric, timestamp HAVING count(*) > 1) AS d"
    )
    report.check("no duplicate observations", duplicates == 0, f"{duplicates} duplicated keys")

    [(unified,)] = stack.sql("SELECT count(*) FROM unified_records WHERE source='coingecko_api'")
    [(raw,)] = stack.sql("SELECT count(*) FROM raw_api_records")
    report.check(
        "coingecko_api rows",
        (unified, raw) == (6 * COINS, 2 * COINS),
        f"{unified} unified (expected {6 * COINS}), {raw} raw (expected {2 * COINS})",
    )

    prices = stack.sql(
        "SELECT external_id, count(*), (array_agg(value ORDER BY timestamp DESC))[1]"
        " FROM unified_records WHERE source='coingecko_api' AND metric='price_usd'"
        " GROUP BY external_id"
    )
    twice = sum(1 for _, count, _ in prices if count == 2)
    report.check(
        "every coin has 2 price observations", twice == len(prices) == COINS, f"{twice} coins"
    )
    latest = {coin_id: value for coin_id, _, value in prices}
    moved = {c["id"]: Decimal(str(c["current_price"])) for c in stack.imitation.coins}
    report.check(
        "latest prices match the moved prices",
        latest == moved,
        f"{sum(latest.get(k) == v for k, v in moved.items())} of {COINS} coins",
    )
    check_data(stack, report, api_rows=6 * COINS)


def beat_still_running(stack: Stack, report: Report) -> None:
    """Check that beat outlived everything above."""
    code = stack.latest("beat").process.poll()
    report.check("beat still running", code is None, f"exit code {code}", role="beat")


STEPS = (start_stack, first_run, kill_worker_mid_run, no_duplicates_no_gaps, beat_still_running)


def print_log_tails(stack: Stack, report: Report) -> None:
    """Print the end of the logs of the processes behind the failed checks."""
    failed = report.failures()
    roles = {check.role for check in failed}
    for role, process in stack.processes:
        if role in roles or None in roles:
            print(f"--- last lines of {process.log_path} ---", file=sys.stderr)
            print(tail(process.log_path), file=sys.stderr)


def interrupt(signum, frame):
    """Turn SIGTERM into KeyboardInterrupt, so that the cleanup runs."""
    raise KeyboardInterrupt


def main() -> int:
    """Run every step, print the report, stop everything; return the exit status."""
    signal.signal(signal.SIGTERM, interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="kasparro-smoke-"))
    report, stack = Report(), Stack(workdir)
    started = time.monotonic()
    try:
        for step in STEPS:
            try:
                step(stack, report)
            except Exception as exc:
                report.check(f"step {step.__name__}", False, first_line(exc), role=None)
                break
    except KeyboardInterrupt:
        report.check("interrupted", False, role=None)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if report.failures():
            print_log_tails(stack, report)
        try:
            stack.close()
        except Exception as exc:
            report.check("stop everything and drop the database", False, first_line(exc), None)
    if report.failures():
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wall time {time.monotonic() - started:.0f}s")
    print(report.summary())
    return 0 if not report.failures() else 1


if __name__ == "__main__":
    sys.exit(main())
