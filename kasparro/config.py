"""Every setting Kasparro reads, taken from the environment with safe defaults."""

import os
from pathlib import Path

from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COINGECKO_MARKETS_URL = "https://api.coingecko.com/api/v3/coins/markets"


def _parsed(name: str, default, parse, kind: str):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ValueError(f"{name} must be {kind}, got {raw!r}") from None


def env_int(name: str, default: int) -> int:
    """Return a whole-number setting; a value that is not one is a clear start-up error."""
    return _parsed(name, default, int, "a whole number")


def env_float(name: str, default: float) -> float:
    """Return a numeric setting; a value that is not a number is a clear start-up error."""
    return _parsed(name, default, float, "a number")


def _str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip() or default


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


def _redis_broker() -> str:
    broker = _str("CELERY_BROKER_URL")
    return broker if broker.startswith(("redis://", "rediss://")) else ""


def load_settings() -> dict:
    """Read every setting from the environment; secrets have no default."""
    return {
        "SQLALCHEMY_DATABASE_URI": database_url(_str("DATABASE_URL", "sqlite:///./etl.db")),
        "API_SOURCE_URL": _str("API_SOURCE_URL", COINGECKO_MARKETS_URL),
        "API_KEY": os.environ.get("API_KEY", "").strip(),
        "API_KEY_HEADER": _str("API_KEY_HEADER"),
        "API_MAX_PAGES": env_int("API_MAX_PAGES", 4),
        "API_PER_PAGE": env_int("API_PER_PAGE", 250),
        "API_TIMEOUT_SECONDS": env_float("API_TIMEOUT_SECONDS", 10.0),
        "API_CALLS_PER_MINUTE": env_float("API_CALLS_PER_MINUTE", 30.0),
        "API_MAX_ATTEMPTS": max(1, env_int("API_MAX_ATTEMPTS", 5)),
        "API_RETRY_BUDGET_SECONDS": env_float("API_RETRY_BUDGET_SECONDS", 120.0),
        "API_BACKOFF_BASE_SECONDS": env_float("API_BACKOFF_BASE_SECONDS", 1.0),
        "API_BACKOFF_MAX_SECONDS": env_float("API_BACKOFF_MAX_SECONDS", 30.0),
        "SCHEMA_DRIFT_THRESHOLD": env_float("SCHEMA_DRIFT_THRESHOLD", 0.8),
        "CSV1_PATH": _str("CSV1_PATH", str(PROJECT_ROOT / "data" / "source1.csv")),
        "CSV2_PATH": _str("CSV2_PATH", str(PROJECT_ROOT / "data" / "source2.csv")),
        "ASSETS_SEED_PATH": _str(
            "ASSETS_SEED_PATH", str(PROJECT_ROOT / "data" / "assets_seed.csv")
        ),
        "ETL_BATCH_SIZE": env_int("ETL_BATCH_SIZE", 1000),
        # Longest CSV record, line ending included; a longer line is rejected, never held whole.
        "CSV_MAX_RECORD_BYTES": max(64, env_int("CSV_MAX_RECORD_BYTES", 64 * 1024)),
        # A CSV file unchanged this long is complete: its unterminated last record is read.
        "CSV_SETTLE_SECONDS": env_int("CSV_SETTLE_SECONDS", 300),
        # The encoding each CSV feed is written in; a row that is not valid in it is rejected.
        "CSV1_ENCODING": _str("CSV1_ENCODING", "utf-8"),
        "CSV2_ENCODING": _str("CSV2_ENCODING", "utf-8"),
        # Largest CoinGecko page accepted; a larger answer fails the read without being kept.
        "API_MAX_PAGE_BYTES": env_int("API_MAX_PAGE_BYTES", 20 * 1024 * 1024),
        # A task whose worker process dies is sent again this many times, then its run FAILS.
        "ETL_WORKER_LOST_RETRIES": env_int("ETL_WORKER_LOST_RETRIES", 2),
        "ETL_WORKER_LOST_RETRY_DELAY_SECONDS": env_int("ETL_WORKER_LOST_RETRY_DELAY_SECONDS", 30),
        "ETL_INJECT_FAILURE": _str("ETL_INJECT_FAILURE"),
        "ETL_STALE_AFTER_SECONDS": env_int("ETL_STALE_AFTER_SECONDS", 900),
        # Retention (kasparro.etl.retention): raw rows the transform has covered go after this
        # many days, per source; 0 keeps them. CoinGecko's payloads are big and come every run.
        "RETENTION_RAW_DAYS_COINGECKO_API": env_int("RETENTION_RAW_DAYS_COINGECKO_API", 7),
        "RETENTION_RAW_DAYS_CSV1": env_int("RETENTION_RAW_DAYS_CSV1", 0),
        "RETENTION_RAW_DAYS_CSV2": env_int("RETENTION_RAW_DAYS_CSV2", 0),
        "RETENTION_UNIFIED_DAYS": env_int("RETENTION_UNIFIED_DAYS", 0),
        "RETENTION_BATCH_SIZE": max(1, env_int("RETENTION_BATCH_SIZE", 1000)),
        "RETENTION_PAUSE_SECONDS": env_float("RETENTION_PAUSE_SECONDS", 0.1),
        "RETENTION_MAX_PASS_SECONDS": env_float("RETENTION_MAX_PASS_SECONDS", 300.0),
        "LOG_LEVEL": _str("LOG_LEVEL", "INFO").upper(),
        "LOG_FORMAT": _str("LOG_FORMAT", "json").lower(),
        "CORS_ORIGINS": _str("CORS_ORIGINS"),
        # Proxies in front of the API that set X-Forwarded-For (so limits see the real client),
        # believed only from peers in FORWARDED_ALLOW_IPS (gunicorn's own setting, same syntax).
        "PROXY_FIX_X_FOR": env_int("PROXY_FIX_X_FOR", 0),
        "FORWARDED_ALLOW_IPS": _str("FORWARDED_ALLOW_IPS", "127.0.0.1,::1"),
        "MAX_CONTENT_LENGTH": 64 * 1024,
        "ETL_ADMIN_TOKEN": os.environ.get("ETL_ADMIN_TOKEN", "").strip(),
        # Shared state (the upstream rate limiter, the public API limits): Redis when there is one.
        "REDIS_URL": _str("REDIS_URL") or _redis_broker(),
        # Per-client limit on the public endpoints, e.g. "120/minute"; empty turns it off.
        "PUBLIC_RATE_LIMIT": _str(
            "PUBLIC_RATE_LIMIT", "300/minute" if os.environ.get("CELERY_BROKER_URL") else ""
        ),
    }


def _url_password(url: str) -> str:
    try:
        return make_url(url).password or ""
    except Exception:  # an unparsable URL fails later with its own clear error
        return ""


def secret_values(config) -> list[str]:
    """Return the configured secret values, so logs can be scrubbed of them."""
    celery = config.get("CELERY", {})
    urls = [
        config.get("SQLALCHEMY_DATABASE_URI", ""),
        celery.get("broker_url") or os.environ.get("CELERY_BROKER_URL", ""),
        celery.get("result_backend") or os.environ.get("CELERY_RESULT_BACKEND", ""),
        config.get("REDIS_URL", ""),
        config.get("API_SOURCE_URL", ""),
    ]
    secrets = [
        config.get("API_KEY", ""),
        config.get("ETL_ADMIN_TOKEN", ""),
        *(pair.partition(":")[2] for pair in os.environ.get("FLOWER_BASIC_AUTH", "").split(",")),
        *(_url_password(url) for url in urls if url),
    ]
    return [s for s in secrets if s and len(s) >= 4]
