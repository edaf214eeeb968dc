"""Every setting Kasparro reads: listed here, read from the environment, and checked.

Each ``Setting`` (``kasparro.setting``) names one environment variable, its default, how its text
is read, and what it means. The application's and Celery's are declared here, each source's in
its own module. ``load_settings()`` reads them all into the app's config, once per app;
``kasparro.celery_config`` builds Celery's settings from that config; docs/configuration.md's
table and ``.env.example`` are checked against the list (``tests/test_settings.py``), and
``settings_table()`` writes that table.
"""

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from kasparro.etl.sources import SOURCES
from kasparro.setting import (
    PROJECT_ROOT,
    Setting,
    ValueOf,
    at_least,
    network_list,
    number,
    one_of,
    project_path,
    url_password,
    whole_number,
)

# Request bodies are small JSON documents; this bound is part of the API, not a setting.
MAX_CONTENT_LENGTH = 64 * 1024


def database_url(raw: str) -> str:
    """Return a SQLAlchemy URL; platform URLs (``postgres://``, ``postgresql://``) use psycopg 3.

    A relative SQLite path is made absolute in the working directory, as SQLAlchemy reads it:
    Flask-SQLAlchemy would otherwise put it under the app's instance folder.
    """
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix) :]
    if raw.startswith("sqlite"):
        url = make_url(raw)
        path = url.database or ""
        if (
            path
            and path != ":memory:"
            and not path.startswith("file:")
            and not Path(path).is_absolute()
        ):
            return url.set(database=os.path.abspath(path)).render_as_string(hide_password=False)
    return raw


def metrics_directory() -> str:
    """Return where prometheus-client shares values between processes (PROMETHEUS_MULTIPROC_DIR).

    The library reads the variable itself, when it is imported; empty: each process keeps its own.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def flower_passwords(users: str) -> list[str]:
    """Return the passwords of FLOWER_BASIC_AUTH's ``user:password`` pairs."""
    return [pair.partition(":")[2] for pair in users.split(",")]


def _embedded_database(value_of: ValueOf) -> str:
    return database_url("sqlite:///./etl.db")  # resolved in the working directory of each read


def _redis_broker(value_of: ValueOf) -> str:
    broker = value_of("CELERY_BROKER_URL")
    return broker if broker.startswith(("redis://", "rediss://")) else ""


def _rate_limit_with_broker(value_of: ValueOf) -> str:
    return "300/minute" if value_of("CELERY_BROKER_URL") else ""


CORE_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL",
        _embedded_database,
        "SQLAlchemy URL; a relative SQLite path is relative to the working directory; "
        "PostgreSQL as `postgresql+psycopg://user:pass@host/db`",
        database_url,
        secret_parts=url_password,
        key="SQLALCHEMY_DATABASE_URI",
        default_text="`sqlite:///./etl.db`",
    ),
    Setting(
        "ASSETS_SEED_PATH",
        project_path("data", "assets_seed.csv"),
        "asset identities used when CoinGecko is out of reach",
    ),
    Setting(
        "ETL_BATCH_SIZE",
        5000,
        "rows per transaction (one batch: raw, unified, checkpoint)",
        whole_number,
    ),
    Setting(
        "CSV_MAX_RECORD_BYTES",
        64 * 1024,
        "longest CSV record, line ending included (at least 64); a longer one is rejected unread",
        at_least(64),
    ),
    Setting(
        "CSV_SETTLE_SECONDS",
        300,
        "a CSV file unchanged this long is complete: its unterminated last record is read",
        whole_number,
    ),
    Setting(
        "SCHEMA_DRIFT_THRESHOLD", 0.8, "confidence needed to map a renamed input field", number
    ),
    Setting(
        "ETL_INJECT_FAILURE",
        "",
        "failure injection for demonstrations: `source:after_rows:N`, `source:before_load`, "
        "`source:on_commit` or `source:crash`",
    ),
    Setting(
        "ETL_WORKER_LOST_RETRIES",
        2,
        "sends of a task after its worker process or whole worker was lost; then the run FAILS",
        whole_number,
    ),
    Setting(
        "ETL_WORKER_LOST_RETRY_DELAY_SECONDS",
        30,
        "pause before each of those sends",
        whole_number,
    ),
    Setting(
        "ETL_STALE_AFTER_SECONDS",
        900,
        "a RUNNING run silent this long is taken as dead and its lock released",
        whole_number,
    ),
    Setting(
        "ETL_ADMIN_TOKEN",
        "",
        "bearer token of `POST /etl/run` and `POST /assets/aliases`; empty disables both",
        secret=True,
    ),
    Setting(
        "RETENTION_UNIFIED_DAYS",
        0,
        "age in days, by `timestamp`, after which observations are deleted; 0 keeps them",
        whole_number,
    ),
    Setting("RETENTION_BATCH_SIZE", 1000, "rows per delete transaction (at least 1)", at_least(1)),
    Setting("RETENTION_PAUSE_SECONDS", 0.1, "pause between two delete transactions", number),
    Setting(
        "RETENTION_MAX_PASS_SECONDS",
        300.0,
        "time budget of a retention pass (0: none); what is left waits for the next",
        number,
    ),
    Setting(
        "LOG_LEVEL",
        "INFO",
        "the lowest level logged: `DEBUG`, `INFO`, `WARNING` or `ERROR`",
        str.upper,
    ),
    Setting(
        "LOG_FORMAT",
        "",
        "`json` (one object a line) or `console`; empty: `console` on a terminal, else `json`",
        one_of("", "json", "console"),
    ),
    Setting("CORS_ORIGINS", "", "comma-separated origins allowed from browsers; empty: none"),
    Setting(
        "PROXY_FIX_X_FOR",
        0,
        "proxies in front of the API that append to `X-Forwarded-For` (2 on Render)",
        whole_number,
    ),
    Setting(
        "FORWARDED_ALLOW_IPS",
        "127.0.0.1,::1",
        "peers trusted as proxies (addresses or networks, `*` for any); gunicorn reads it too",
    ),
    Setting(
        "METRICS_TOKEN",
        "",
        "bearer token `GET /metrics` asks for (Prometheus sends it: `authorization` in its scrape "
        "config); empty: none is asked",
        secret=True,
    ),
    Setting(
        "METRICS_ALLOWED_NETWORKS",
        "",
        "clients `GET /metrics` answers: addresses or networks, comma-separated, judged on the "
        "client address `PROXY_FIX_X_FOR` finds; empty: any",
        network_list,
    ),
    Setting(
        "RESPONSE_CACHE_ENTRIES",
        512,
        "responses each API process keeps until the next ETL commit changes them; 0: none",
        whole_number,
    ),
    Setting(
        "RESPONSE_CACHE_SECONDS",
        60,
        "longest a kept response is served: a write made outside the ETL shows within it",
        at_least(1),
    ),
    Setting(
        "ANOMALY_MAD_THRESHOLD",
        3.5,
        "robust z-score (median and MAD) beyond which a run's count or duration is flagged",
        number,
    ),
    Setting(
        "ANOMALY_HISTORY_RUNS",
        20,
        "finished runs of a source that form the history a run is judged against (at least 3)",
        at_least(3),
    ),
    Setting(
        "ANOMALY_JUMP_PERCENT",
        50.0,
        "move between consecutive observations of an asset's metric that is flagged, in %",
        number,
    ),
    Setting(
        "ANOMALY_SPREAD_PERCENT",
        5.0,
        "cross-source spread of an asset's latest values that is flagged, in % of the median",
        number,
    ),
    Setting(
        "REDIS_URL",
        _redis_broker,
        "shared state: upstream pacing and request limits",
        secret_parts=url_password,
        default_text="the broker, if Redis",
    ),
    Setting(
        "PUBLIC_RATE_LIMIT",
        _rate_limit_with_broker,
        "per-client limit on the public endpoints, e.g. `120/minute`",
        default_text="off; `300/minute` with a broker",
    ),
)

CELERY_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "CELERY_BROKER_URL",
        "",
        "Redis URL of the task queue; empty runs tasks in-process",
        secret_parts=url_password,
    ),
    Setting(
        "CELERY_RESULT_BACKEND",
        "",
        "Redis URL where task results are kept; empty: none are",
        secret_parts=url_password,
    ),
    Setting("CELERY_QUEUE", "etl", "the queue the tasks go to"),
    Setting(
        "CELERY_TASK_SOFT_TIME_LIMIT",
        1800,
        "a task's soft time limit in seconds (the hard one is 60 s more)",
        whole_number,
    ),
    Setting(
        "CELERY_VISIBILITY_TIMEOUT",
        None,
        "seconds after which Redis redelivers an unacknowledged task: above the longest run",
        whole_number,
        default_text="the hard time limit + 600",
    ),
    Setting(
        "CELERY_UNACKED_RESTORE_SECONDS",
        60,
        "how often workers look for tasks to redeliver",
        whole_number,
    ),
    Setting(
        "SCHEDULE_RETENTION_SECONDS", 3600, "how often beat runs the retention pass", whole_number
    ),
    Setting(
        "FLOWER_BASIC_AUTH",
        "",
        "Flower's basic auth, `user:password` (comma-separated pairs); Flower never runs without",
        secret=True,
        secret_parts=flower_passwords,
    ),
)


def source_settings() -> dict[str, tuple[Setting, ...]]:
    """Return, by source, the settings each source declares (``Source.declared_settings``)."""
    return {name: source.declared_settings() for name, source in SOURCES.items()}


def app_settings() -> tuple[Setting, ...]:
    """Return every setting the app reads: its own, Celery's, then each source's."""
    return (
        *CORE_SETTINGS,
        *CELERY_SETTINGS,
        *(setting for settings in source_settings().values() for setting in settings),
    )


# Read by docker compose from .env, never by the app; listed so .env.example is checked whole.
COMPOSE_SETTINGS: tuple[Setting, ...] = (
    Setting("POSTGRES_PASSWORD", "", "password of the compose stack's PostgreSQL", secret=True),
    Setting("REDIS_PASSWORD", "", "password of the compose stack's Redis", secret=True),
    Setting("API_PORT", 8000, "host port of the compose stack's API", whole_number),
    Setting(
        "GRAFANA_ADMIN_PASSWORD",
        "",
        "password of Grafana's `admin` user (`monitoring` profile), taken at Grafana's first start",
        secret=True,
    ),
    Setting("GRAFANA_PORT", 3000, "host port of Grafana (`monitoring` profile)", whole_number),
    Setting(
        "PROMETHEUS_PORT",
        9090,
        "port of Prometheus on the host's 127.0.0.1 (`monitoring` profile)",
        whole_number,
    ),
)

# Read by docker/entrypoint.sh, which starts each role of the image, never by the app.
ENTRYPOINT_SETTINGS: tuple[Setting, ...] = (
    Setting("PORT", 8000, "port gunicorn listens on (`api` role)", whole_number),
    Setting(
        "WEB_CONCURRENCY", 2, "gunicorn sync workers: one per core measured fastest", whole_number
    ),
    Setting(
        "GUNICORN_TIMEOUT", 120, "seconds before gunicorn restarts a silent worker", whole_number
    ),
    Setting("WORKER_CONCURRENCY", 2, "Celery worker processes (`worker` role)", whole_number),
    Setting(
        "WORKER_METRICS_PORT",
        9808,
        "port the `worker` role serves its Prometheus `/metrics` on",
        whole_number,
    ),
    Setting(
        "PROMETHEUS_MULTIPROC_DIR",
        "/tmp/kasparro-metrics",
        "under which each role's processes share their metrics, in a subdirectory named after "
        "the role; emptied when the role starts",
    ),
    Setting(
        "BEAT_SCHEDULE_FILE", "/tmp/celerybeat-schedule", "where beat keeps its last run times"
    ),
    Setting(
        "FLOWER_PORT",
        5555,
        "port Flower listens on (`flower` role); in compose, its host port",
        whole_number,
    ),
    Setting("MIGRATE_TRIES", 30, "tries, 2 s apart, to apply migrations at start", whole_number),
    Setting(
        "ETL_RUN_ON_START",
        1,
        "1: the `api` role queues one ETL pass at start; 0: not",
        whole_number,
    ),
)


def _read(settings: Iterable[Setting], environ: Mapping[str, str]) -> dict[str, Any]:
    by_name = {setting.name: setting for setting in settings}

    def value_of(name: str) -> Any:
        return by_name[name].read(environ, value_of)

    return {setting.config_key: value_of(name) for name, setting in by_name.items()}


def load_settings() -> dict[str, Any]:
    """Read every setting from the environment, for the app's config; a bad value stops here."""
    return {**_read(app_settings(), os.environ), "MAX_CONTENT_LENGTH": MAX_CONTENT_LENGTH}


def secret_values(config: Mapping[str, Any]) -> list[str]:
    """Return the configured secret values, so logs can be scrubbed of them.

    A setting is taken from ``config`` when it is there, else from the environment; the Celery
    URLs a test or a caller put in ``config["CELERY"]`` count too.
    """
    holders = [s for _, group in setting_groups() for s in group if s.holds_secret]
    elsewhere = [s for s in holders if s.config_key not in config]  # other services' secrets
    values = {**_read(elsewhere, os.environ), **config}
    celery = config.get("CELERY", {})
    secrets = [
        *(part for setting in holders for part in setting.secrets_in(values[setting.config_key])),
        *url_password(celery.get("broker_url") or ""),
        *url_password(celery.get("result_backend") or ""),
    ]
    return [s for s in secrets if s and len(s) >= 4]


def shown_default(setting: Setting) -> str:
    """Return ``setting``'s default as the configuration page writes it."""
    if setting.default_text:
        return setting.default_text
    if setting.secret:
        return "none (secret)"
    value = example_value(setting)
    if not value:
        return "empty"
    return value if isinstance(setting.default, int | float) else f"`{value}`"


def setting_groups() -> list[tuple[str, tuple[Setting, ...]]]:
    """Return every setting, by group, as the configuration page and ``.env.example`` list them."""
    return [
        ("The application", CORE_SETTINGS),
        ("Celery, beat and Flower", CELERY_SETTINGS),
        *((f"Source `{name}`", settings) for name, settings in source_settings().items()),
        (
            "docker/entrypoint.sh (read when a container starts, not by the app)",
            ENTRYPOINT_SETTINGS,
        ),
        ("docker compose only (read from `.env` by compose, not by the app)", COMPOSE_SETTINGS),
    ]


def settings_table() -> str:
    """Return the configuration page's tables of settings, in Markdown, one per group."""
    lines = []
    for title, settings in setting_groups():
        lines += [f"**{title}**", "", "| key | default | meaning |", "|---|---|---|"]
        lines += [f"| `{s.name}` | {shown_default(s)} | {s.meaning} |" for s in settings]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


ENV_EXAMPLE_HEADER = """\
# Kasparro configuration. Copy to .env (never commit .env) and set what you need.
# Generated from the settings' declarations by `make settings-docs`: do not edit by hand.
# Every key is optional for the embedded default; an empty value means the default; secrets
# have no default anywhere.
"""


def example_value(setting: Setting) -> str:
    """Return ``setting``'s line value in ``.env.example``: its default, empty for a secret."""
    value = setting.default
    if setting.secret or callable(value) or value in ("", None):
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and value.startswith(f"{PROJECT_ROOT}{os.sep}"):
        return Path(value).relative_to(PROJECT_ROOT).as_posix()
    return str(value)


def env_example() -> str:
    """Return ``.env.example``: every setting by group, its meaning above it."""
    lines = [ENV_EXAMPLE_HEADER.rstrip("\n")]
    for title, settings in setting_groups():
        lines += ["", f"# --- {title.replace('`', '')} ---"]
        for setting in settings:
            meaning = setting.meaning.replace("`", "")
            if setting.default_text:
                meaning += f" (empty: {setting.default_text.replace('`', '')})"
            lines += [f"# {meaning}", f"{setting.name}={example_value(setting)}"]
    return "\n".join(lines) + "\n"
