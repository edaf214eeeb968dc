"""A task that kills its worker process, or its whole worker: sent a bounded number of times."""

import json
import time

import pytest
import sqlalchemy as sa
from billiard.exceptions import WorkerLostError

from kasparro.etl.runs import start_run
from kasparro.extensions import db
from kasparro.models import EtlRun, UnifiedRecord
from tasks.etl import extract, finish_run, ingest, record_lost_worker, transform_and_upsert
from tests.coingecko_imitation import Fault
from tests.conftest import ADMIN_TOKEN
from tests.processes import eventually
from tests.test_celery_runs import wait_for_run

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.slow
@pytest.mark.parametrize("retries", [0, 2])
def test_a_task_that_kills_its_worker_is_bounded_then_fails_the_run_and_beat_goes_on(
    broker_app, start_worker, retries
):
    lost = {"ETL_WORKER_LOST_RETRIES": str(retries), "ETL_WORKER_LOST_RETRY_DELAY_SECONDS": "0"}
    crashing = start_worker(ETL_INJECT_FAILURE="csv1:crash", **lost)
    client = broker_app.test_client()

    queued = client.post("/etl/run", json={"sources": ["csv1"]}, headers=AUTH)
    run = wait_for_run(queued.get_json()["runs"][0]["run_id"], timeout=120)

    assert run.status == "FAILED"
    deaths = "1 time" if retries == 0 else f"{retries + 1} times"
    assert run.error == (
        f"WorkerLost: the worker process running etl.ingest died {deaths} "
        "(Worker exited prematurely: signal 9 (SIGKILL)); not retried again"
    )
    starts = [line for line in crashing.log().splitlines() if '"etl.task.started"' in line]
    assert sum('"etl.ingest"' in line for line in starts) == retries + 1  # it loads the batches
    crashing.stop()

    # The next scheduled run finds the source free and loads it.
    start_worker(**lost)
    broker_app.extensions["celery"].send_task("etl.scheduled_run", args=["csv1"])
    next_id = eventually(
        lambda: db.session.scalar(sa.select(sa.func.max(EtlRun.id)).where(EtlRun.id > run.id)),
        timeout=60,
        what="the scheduled run",
    )
    following = wait_for_run(next_id)
    assert (following.status, following.trigger) == ("SUCCESS", "schedule")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UnifiedRecord)) == 14


def _deliveries(worker, task_id: str) -> list[int]:
    """Return the delivery count each start of ``task_id`` logged, in every worker so far."""
    lines = (json.loads(line) for line in worker.log().splitlines() if line.startswith("{"))
    return [
        line["delivery"]
        for line in lines
        if line.get("event") == "etl.task.started" and line.get("task_id") == task_id
    ]


@pytest.mark.slow
@pytest.mark.parametrize("retries", [0, 1])
def test_a_task_whose_whole_worker_dies_is_delivered_a_bounded_number_of_times(
    broker_app, start_worker, coingecko, retries
):
    # The read hangs on CoinGecko's first page, and each worker reading it is killed there,
    # main process first, as a lost node would be: nothing is acknowledged, and Redis hands
    # the message back after the visibility timeout.
    lost = {"ETL_WORKER_LOST_RETRIES": str(retries), "CELERY_VISIBILITY_TIMEOUT": "4"}
    coingecko.fail_page(1, Fault(delay=60))
    queued = broker_app.test_client().post(
        "/etl/run", json={"sources": ["coingecko_api"]}, headers=AUTH
    )
    run_id, task_id = (queued.get_json()["runs"][0][key] for key in ("run_id", "task_id"))
    for delivery in range(1, retries + 2):
        worker = start_worker(**lost)
        eventually(
            lambda n=delivery: len(coingecko.page_requests()) >= n,
            timeout=60,
            what=f"delivery {delivery}",
        )
        worker.kill_main()

    last = start_worker(**lost)
    run = wait_for_run(run_id, timeout=60)

    assert run.status == "FAILED"
    times = "1 time" if retries == 0 else f"{retries + 1} times"
    assert run.error == (
        f"WorkerLost: the worker running etl.ingest was lost {times} before the task ended "
        "(each time the broker delivered it again); not retried again"
    )
    # The last delivery was acknowledged: past another visibility timeout it has not come back.
    time.sleep(6)
    assert _deliveries(last, task_id) == list(range(1, retries + 3))
    assert len(coingecko.page_requests()) == retries + 1

    # The next scheduled run finds the source free and loads it.
    coingecko.clear_faults()
    broker_app.extensions["celery"].send_task("etl.scheduled_run", args=["coingecko_api"])
    next_id = eventually(
        lambda: db.session.scalar(sa.select(sa.func.max(EtlRun.id)).where(EtlRun.id > run_id)),
        timeout=60,
        what="the scheduled run",
    )
    following = wait_for_run(next_id)
    assert (following.status, following.trigger) == ("SUCCESS", "schedule")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UnifiedRecord)) == 15


@pytest.mark.parametrize(
    ("task", "args"),
    [
        (ingest, lambda run_id: [run_id]),
        (finish_run, lambda run_id: [{"run_id": run_id}]),
        (extract, lambda run_id: [run_id]),  # the former names, kept for one release
        (transform_and_upsert, lambda run_id: [{"run_id": run_id}]),
    ],
    ids=["ingest", "finish_run", "extract", "transform_and_upsert"],
)
def test_the_worker_loss_handler_leaves_no_connection_for_later_forks(app, task, args):
    # It runs in the worker's main process, which forks the next pool processes: a connection
    # left in its pool would be shared by them.
    run_id = start_run(db.session, "csv1", "schedule", app.config)
    db.session.remove()
    db.engine.dispose()
    lost = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 7.")

    record_lost_worker(sender=task, exception=lost, args=args(run_id))

    assert db.engine.pool.checkedin() == 0
    run = db.session.get(EtlRun, run_id)
    assert (run.status, run.error) == (
        "FAILED",
        f"WorkerLost: the worker process running {task.name} died 1 time "
        "(Worker exited prematurely: signal 9 (SIGKILL)); not retried again",
    )
