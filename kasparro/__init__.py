"""Kasparro: a self-hostable cryptocurrency market-data pipeline."""

from pathlib import Path
from typing import Any

from dotenv import load_dotenv
from flask import Flask

from kasparro.config import load_settings, secret_values
from kasparro.etl.faults import FailurePlan
from kasparro.logs import configure_logging

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: config, then extensions, blueprints, error handling and the CLI."""
    load_dotenv()
    app = Flask(__name__)
    app.config.update(load_settings())
    app.config.update(
        API_TITLE="Kasparro",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        OPENAPI_REDOC_PATH="/redoc",
        OPENAPI_REDOC_URL="https://cdn.jsdelivr.net/npm/redoc/bundles/redoc.standalone.js",
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        JSON_SORT_KEYS=False,
    )
    app.config.update(config or {})
    FailurePlan.parse(app.config["ETL_INJECT_FAILURE"])  # a bad plan fails at start, not mid-run
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"], secret_values(app.config))
    register_extensions(app)
    register_blueprints(app)
    register_request_hooks(app)
    register_commands(app)
    register_celery(app)
    return app


def register_extensions(app: Flask) -> None:
    """Bind the database, migrations, the OpenAPI object and CORS; configure request limits."""
    from kasparro.extensions import api, db, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    api.init_app(app)
    app.config.update(
        RATELIMIT_STORAGE_URI=app.config["REDIS_URL"] or "memory://",
        RATELIMIT_HEADERS_ENABLED=True,
        # Limits must never take the API down: without Redis they are kept in memory instead.
        RATELIMIT_SWALLOW_ERRORS=True,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_KEY_PREFIX="kasparro",
    )
    if app.config["PROXY_FIX_X_FOR"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXY_FIX_X_FOR"])
    if app.config["CORS_ORIGINS"]:
        from flask_cors import CORS

        CORS(app, origins=[o.strip() for o in app.config["CORS_ORIGINS"].split(",")])


def register_blueprints(app: Flask) -> None:
    """Register one blueprint per resource."""
    from kasparro.extensions import api, init_limiter
    from kasparro.routes import data, etl, health, runs, stats

    for module in (data, health, stats, runs, etl):
        api.register_blueprint(module.blp)
    init_limiter(app, [data.blp, stats.blp, runs.blp, etl.blp])


def register_request_hooks(app: Flask) -> None:
    """Add request ids, access logs and JSON answers for every error."""
    from kasparro.routes.errors import init_error_handling

    init_error_handling(app)


def register_commands(app: Flask) -> None:
    """Add the ``flask etl`` command group."""
    from kasparro.cli import etl_cli

    app.cli.add_command(etl_cli)


def register_celery(app: Flask) -> None:
    """Bind a Celery app to this Flask app (eager, in-process, when no broker is set)."""
    from kasparro.celery_app import celery_init_app

    celery_init_app(app)
