"""Celery tasks: thin wrappers around kasparro.etl that add retries, time limits and chaining."""
