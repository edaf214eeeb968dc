"""Entry point: ``app`` for gunicorn and the flask CLI, ``celery_app`` for the celery command."""

from kasparro import create_app

app = create_app()
celery_app = app.extensions["celery"]
