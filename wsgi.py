"""Entry point: ``app`` for gunicorn and the flask CLI, ``celery_app`` for the celery command."""

import gc

from kasparro import create_app

app = create_app()
celery_app = app.extensions["celery"]
# What the app built lives as long as the process: the collector need not walk it again. Without
# this, each gunicorn worker paused for about 100 ms of full collection every few seconds.
gc.freeze()
