"""Entry point for gunicorn and the flask CLI: ``app`` is the application."""

from kasparro import create_app

app = create_app()
