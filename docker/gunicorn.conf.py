"""Gunicorn hooks of the api role (docker/entrypoint.sh passes this file with ``--config``)."""

import os

from prometheus_client import multiprocess


def child_exit(server, worker):
    """Drop the live gauges of a worker that exited; what it counted stays counted."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
