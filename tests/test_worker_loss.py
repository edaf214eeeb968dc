"""A task that kills its worker process: retried a bounded number of times, then FAILED."""

import pytest
import sqlalchemy as sa
from billiard.exceptions import WorkerLostError

from kasparro.etl.runs import start_run
from kasparro.extensions import db
from kasparro.models import EtlRun, UnifiedRecord
from tasks.etl import extract, record_lost_worker, transform_and_upsert
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
        f"WorkerLost: the worker process running etl.extract died {deaths} "
        "(Worker exited prematurely: signal 9 (SIGKILL)); not retried again"
    )
    starts = [line for line in crashing.log().splitlines() if '"etl.task.started"' in line]
    assert sum('"etl.extract"' in line for line in starts) == retries + 1  # it loads the batches
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


@pytest.mark.parametrize(
    ("task", "args"),
    [
        (extract, lambda run_id: [run_id]),
        (transform_and_upsert, lambda run_id: [{"run_id": run_id}]),
    ],
    ids=["extract", "transform"],
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
