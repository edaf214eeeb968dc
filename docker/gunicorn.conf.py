"""Settings and hooks of the api role's gunicorn (docker/entrypoint.sh passes this file)."""

import os

from prometheus_client import multiprocess

# gunicorn refuses past these with an HTML page, before the app sees the request. They sit above
# the app's own limits (kasparro/routes/request_limits.py: 4094, 100, 8190), so that the app's
# bind first and answer in JSON; these stay as the hard stop. 8190 is the longest request line
# gunicorn allows; a request's head is read whole, at most fields x field size (3.2 MiB).
limit_request_line = 8190
limit_request_fields = 200
limit_request_field_size = 16380


def child_exit(server, worker):
    """Drop the live gauges of a worker that exited; what it counted stays counted."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
