"""Kasparro: a self-hostable cryptocurrency market-data pipeline."""

from pathlib import Path
from typing import Any

from dotenv import load_dotenv
from flask import Flask

from kasparro.config import load_settings, metrics_directory, secret_values
from kasparro.etl.faults import FailurePlan
from kasparro.logs import configure_logging
from kasparro.metrics import prepare_shared_values

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: config, extensions, middleware, blueprints, error handling and the CLI."""
    # Extensions load with the app, not with the package: the ETL core imports none of them.
    from kasparro.extensions import BodyJSONProvider

    load_dotenv()
    app = Flask(__name__)
    app.json = BodyJSONProvider(app)
    # Keys in the schemas' order, as documented: sorting them doubled the cost of a page's JSON.
    app.json.sort_keys = False
    app.config.update(load_settings())
    app.config.update(
        API_TITLE="Kasparro",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # The documentation pages load only vendored assets (kasparro/static/README.md).
        OPENAPI_SWAGGER_UI_URL="/static/swagger-ui/",
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},  # no badge from validator.swagger.io
        OPENAPI_REDOC_PATH="/redoc",
        OPENAPI_REDOC_URL="/static/redoc/redoc.standalone.js",
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
    )
    app.config.update(config or {})
    FailurePlan.parse(app.config["ETL_INJECT_FAILURE"])  # a bad plan fails at start, not mid-run
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"], secret_values(app.config))
    prepare_shared_values(metrics_directory())  # before this process records a metric
    register_extensions(app)
    register_middleware(app)
    register_blueprints(app)
    register_request_hooks(app)
    register_commands(app)
    register_celery(app)
    return app


def register_extensions(app: Flask) -> None:
    """Bind the database, migrations, the kept answers, the OpenAPI object and CORS; limits."""
    from kasparro.extensions import api, db, migrate
    from kasparro.routes.kept_answers import init_kept_answers

    db.init_app(app)
    # In each process's memory: a hit costs no network, and entries are keyed by data version.
    init_kept_answers(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    api.init_app(app)
    app.config.update(
        # Without a public limit nothing is limited: no limiter runs, and no request pays for it.
        RATELIMIT_ENABLED=bool(app.config["PUBLIC_RATE_LIMIT"]),
        RATELIMIT_STORAGE_URI=app.config["REDIS_URL"] or "memory://",
        RATELIMIT_HEADERS_ENABLED=True,
        # Limits must never take the API down: without Redis they are kept in memory instead.
        RATELIMIT_SWALLOW_ERRORS=True,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_KEY_PREFIX="kasparro",
    )
    if app.config["CORS_ORIGINS"]:
        from flask_cors import CORS

        CORS(app, origins=[o.strip() for o in app.config["CORS_ORIGINS"].split(",")])


def register_middleware(app: Flask) -> None:
    """Read the client's address from trusted proxies only; send security headers."""
    from kasparro.middleware import send_security_headers, trust_forwarded_for

    trust_forwarded_for(app)
    send_security_headers(app)


def register_blueprints(app: Flask) -> None:
    """Register one blueprint per resource."""
    from kasparro.extensions import api, init_limiter
    from kasparro.routes import (
        aliases,
        analysis,
        assets,
        dashboard,
        data,
        etl,
        health,
        metrics,
        runs,
        stats,
    )
    from kasparro.routes.documented_errors import document_errors

    modules = (data, health, stats, runs, etl, analysis, assets, aliases, metrics, dashboard)
    public = (data, stats, runs, etl, analysis, assets, aliases, dashboard)
    # Before the blueprints: each operation is documented as its blueprint is registered.
    document_errors(api.spec, rate_limited=[module.blp.name for module in public])
    for module in modules:
        api.register_blueprint(module.blp)
    init_limiter(app, [module.blp for module in public])


def register_request_hooks(app: Flask) -> None:
    """Give every request an id and an access-log line, and every error a JSON body."""
    from kasparro.routes.errors import init_error_handlers
    from kasparro.routes.request_log import init_request_log

    init_request_log(app)
    init_error_handlers(app)


def register_commands(app: Flask) -> None:
    """Add the ``flask etl`` and ``flask assets`` command groups."""
    from kasparro.cli import etl_cli
    from kasparro.corrections_cli import assets_cli, reprocess_command

    etl_cli.add_command(reprocess_command)
    app.cli.add_command(etl_cli)
    app.cli.add_command(assets_cli)


def register_celery(app: Flask) -> None:
    """Bind a Celery app to this Flask app (eager, in-process, when no broker is set)."""
    from kasparro.celery_app import celery_init_app

    celery_init_app(app)
