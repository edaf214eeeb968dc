"""Every setting is declared once in kasparro/config.py; its docs page and .env.example agree."""

import ast
import re
from pathlib import Path

import pytest

from kasparro import config as config_module
from kasparro import create_app
from kasparro.celery_config import celery_settings
from kasparro.config import (
    app_settings,
    env_example,
    load_settings,
    secret_values,
    setting_groups,
    source_settings,
)
from kasparro.etl.sources import SOURCES
from kasparro.setting import Setting, raw_retention_setting, schedule_setting
from scripts.settings_docs import with_settings_table

ROOT = Path(__file__).resolve().parent.parent
EVERY_SETTING = {setting.name: setting for _, group in setting_groups() for setting in group}
# The modules of the app: only kasparro/config.py among them reads the environment.
APP_MODULES = [*ROOT.glob("kasparro/**/*.py"), *ROOT.glob("tasks/**/*.py")]
APP_MODULES += [ROOT / "wsgi.py"]


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    """Unset every setting and work in an empty directory, so each read gives its default."""
    for name in EVERY_SETTING:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def env_example_lines() -> list[tuple[str, str]]:
    """Return the (key, value) lines of .env.example, in order."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return [
        tuple(line.split("=", 1)) for line in lines if line.strip() and not line.startswith("#")
    ]


def test_each_setting_is_declared_once():
    names = [setting.name for _, group in setting_groups() for setting in group]
    keys = [setting.config_key for setting in app_settings()]

    assert len(names) == len(set(names))
    assert len(keys) == len(set(keys))


def test_every_source_has_a_schedule_and_a_raw_retention_setting():
    assert list(source_settings()) == list(SOURCES)
    for source, settings in source_settings().items():
        names = [setting.name for setting in settings]
        assert schedule_setting(source) in names
        assert raw_retention_setting(source) in names


def test_a_secret_cannot_be_given_a_default():
    with pytest.raises(ValueError, match="X_TOKEN is a secret: it must have no default"):
        Setting("X_TOKEN", "changeme", "a token", secret=True)


@pytest.mark.parametrize("document", ["docs/configuration.md", ".env.example"])
def test_the_settings_documents_are_generated_from_the_declarations(document):
    written = (ROOT / document).read_text()
    expected = with_settings_table(written) if document.endswith(".md") else env_example()

    assert written == expected, f"{document} is out of date: run `make settings-docs`"


def test_env_example_names_every_setting_once():
    keys = [key for key, _ in env_example_lines()]

    assert sorted(keys) == sorted(EVERY_SETTING)


def test_the_entrypoint_and_compose_read_only_declared_settings():
    for path in ("docker/entrypoint.sh", "docker-compose.yml"):
        read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / path).read_text()))
        assert sorted(read - set(EVERY_SETTING)) == [], path


def test_env_example_gives_no_secret_a_value_and_every_other_value_is_valid():
    for key, value in env_example_lines():
        setting = EVERY_SETTING[key]
        if setting.secret:
            assert value == "", key
        elif value:
            setting.parse(value)  # raises when the example would not start
            assert setting.secrets_in(setting.parse(value)) == [], key


def test_unset_settings_take_their_defaults(clean_environment):
    settings = load_settings()

    assert settings["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{Path.cwd() / 'etl.db'}"
    assert settings["CSV1_PATH"] == str(ROOT / "data" / "source1.csv")
    assert settings["API_KEY"] == settings["ETL_ADMIN_TOKEN"] == ""
    assert settings["API_TIMEOUT_SECONDS"] == 10.0
    assert settings["API_MAX_PAGES"] == 4
    assert settings["REDIS_URL"] == settings["PUBLIC_RATE_LIMIT"] == ""
    assert settings["CELERY_VISIBILITY_TIMEOUT"] is None
    assert settings["MAX_CONTENT_LENGTH"] == 64 * 1024
    assert {settings[schedule_setting(source)] for source in ("csv1", "csv2")} == {600}
    assert settings[schedule_setting("coingecko_api")] == 300
    assert settings[raw_retention_setting("coingecko_api")] == 7


def test_a_blank_value_means_the_default(clean_environment):
    clean_environment.setenv("API_MAX_PAGES", "  ")
    clean_environment.setenv("LOG_LEVEL", "")

    settings = load_settings()

    assert (settings["API_MAX_PAGES"], settings["LOG_LEVEL"]) == (4, "INFO")


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("API_MAX_PAGES", " 7 ", 7),
        ("API_TIMEOUT_SECONDS", "2.5", 2.5),
        ("API_MAX_ATTEMPTS", "0", 1),
        ("CSV_MAX_RECORD_BYTES", "10", 64),
        ("RETENTION_BATCH_SIZE", "-3", 1),
        ("LOG_LEVEL", "debug", "DEBUG"),
        ("LOG_FORMAT", "Console", "console"),
        ("DATABASE_URL", "postgres://u@db/kasparro", "postgresql+psycopg://u@db/kasparro"),
    ],
)
def test_a_value_is_read_as_its_setting_says(clean_environment, name, raw, expected):
    clean_environment.setenv(name, raw)

    assert load_settings()[EVERY_SETTING[name].config_key] == expected


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("API_MAX_PAGES", "four", "API_MAX_PAGES must be a whole number, got 'four'"),
        ("API_TIMEOUT_SECONDS", "10s", "API_TIMEOUT_SECONDS must be a number, got '10s'"),
        ("SCHEDULE_CSV1_SECONDS", "1.5", "SCHEDULE_CSV1_SECONDS must be a whole number"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be empty or `json` or `console`, got 'xml'"),
        ("LOG_FORMAT", "text", "LOG_FORMAT must be empty or `json` or `console`, got 'text'"),
    ],
)
def test_a_malformed_value_stops_the_start_naming_the_setting(
    clean_environment, name, raw, message
):
    clean_environment.setenv(name, raw)

    with pytest.raises(ValueError, match=re.escape(message)):
        load_settings()


@pytest.mark.parametrize(
    ("broker", "redis_url", "public_limit"),
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://:pw@127.0.0.1:6379/0", "300/minute"),
        ("amqp://127.0.0.1//", "", "300/minute"),
        ("", "", ""),
    ],
)
def test_shared_state_and_request_limits_follow_the_broker(
    clean_environment, broker, redis_url, public_limit
):
    clean_environment.setenv("CELERY_BROKER_URL", broker)

    settings = load_settings()

    assert (settings["REDIS_URL"], settings["PUBLIC_RATE_LIMIT"]) == (redis_url, public_limit)


def test_secrets_are_found_in_the_settings_whether_configured_or_in_the_environment(
    clean_environment,
):
    clean_environment.setenv("CELERY_BROKER_URL", "redis://:broker-pass-1@127.0.0.1:6379/0")
    clean_environment.setenv("CELERY_RESULT_BACKEND", "redis://:backend-pass-2@127.0.0.1/1")
    clean_environment.setenv("FLOWER_BASIC_AUTH", "ann:flower-pass-3")
    clean_environment.setenv("POSTGRES_PASSWORD", "compose-pass-4")
    clean_environment.setenv("API_KEY", "environment-key-5")
    config = {
        "API_KEY": "configured-key-6",
        "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://u:db-pass-7@127.0.0.1/kasparro",
        "CELERY": {"broker_url": "redis://:celery-pass-8@127.0.0.1/2"},
        "API_SOURCE_URL": "https://reader:proxy-pass-9@proxy.internal/api/v3/coins/markets",
    }

    secrets = set(secret_values(config))

    assert secrets == {
        "broker-pass-1",
        "backend-pass-2",
        "flower-pass-3",
        "compose-pass-4",
        "configured-key-6",
        "db-pass-7",
        "celery-pass-8",
        "proxy-pass-9",
    }
    assert "redis://:broker-pass-1@127.0.0.1:6379/0" not in secrets  # the password, not the URL


def test_celery_settings_are_built_from_the_settings(clean_environment):
    clean_environment.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
    clean_environment.setenv("CELERY_QUEUE", "elsewhere")
    clean_environment.setenv("CELERY_TASK_SOFT_TIME_LIMIT", "100")
    clean_environment.setenv("CELERY_UNACKED_RESTORE_SECONDS", "1")
    built = celery_settings(load_settings())
    clean_environment.setenv("CELERY_VISIBILITY_TIMEOUT", "8")
    visibility = celery_settings(load_settings())["broker_transport_options"]["visibility_timeout"]

    queue, soft, hard = (
        built["task_default_queue"],
        built["task_soft_time_limit"],
        built["task_time_limit"],
    )
    transport, eager = built["broker_transport_options"], built["task_always_eager"]
    assert (queue, soft, hard, eager) == ("elsewhere", 100, 160, False)
    assert transport["visibility_timeout"] == 760  # ten minutes past the hard limit
    assert (transport["unacked_restore_interval"], transport["unacked_mutex_expire"]) == (1, 10)
    assert visibility == 8


def test_the_app_and_celery_read_the_environment_once(clean_environment):
    clean_environment.setenv("CELERY_QUEUE", "from-the-environment")
    reads = []

    def counted(settings, environ):
        reads.extend(setting.name for setting in settings)
        return read(settings, environ)

    read = config_module._read
    clean_environment.setattr(config_module, "_read", counted)
    app = create_app()

    # Each setting is read once, for the app and for Celery alike; the only other read is of
    # the secrets that other services hold (POSTGRES_PASSWORD, say), so logs are scrubbed of them.
    assert sorted(reads) == sorted(set(reads))
    assert {setting.name for setting in app_settings()} <= set(reads)
    assert app.extensions["celery"].conf.task_default_queue == "from-the-environment"
    # Celery takes what the app was configured with, not what the environment says meanwhile.
    clean_environment.setenv("CELERY_QUEUE", "changed-later")
    assert app.extensions["celery"].conf.task_default_queue == "from-the-environment"
    assert create_app({"CELERY_QUEUE": "given"}).extensions["celery"].conf.task_default_queue == (
        "given"
    )


def test_only_the_settings_module_reads_the_environment():
    readers = [
        str(path.relative_to(ROOT))
        for path in APP_MODULES
        if path != ROOT / "kasparro" / "config.py"
        and re.search(r"\bos\.environ\b|\bgetenv\(", path.read_text())
    ]

    assert readers == []


def test_the_settings_modules_import_nothing_of_flask():
    # The ETL core reads its settings through them; config.py takes the sources' declarations.
    allowed = {"config.py": {"kasparro.setting", "kasparro.etl.sources"}, "setting.py": set()}
    for module, allowed_own in allowed.items():
        tree = ast.parse((ROOT / "kasparro" / module).read_text())
        imported = [
            alias.name if isinstance(node, ast.Import) else node.module
            for node in tree.body
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        ]
        assert not [name for name in imported if name.split(".")[0] == "flask"]
        assert {name for name in imported if name.split(".")[0] == "kasparro"} <= allowed_own
