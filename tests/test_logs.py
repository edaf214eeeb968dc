"""Invariant 7 at its narrowest point: whatever is logged, no configured secret reaches stderr.

An app is built with recognisable secrets (the API key, the admin token, the passwords of the
database, the broker, Redis and Flower), and then each secret is logged on purpose, in every shape
a log line can carry it: under secret-sounding keys, inside longer strings and URLs, in nested
structures, in an exception's message and traceback, and through plain standard-library loggers,
in both log formats. The output must show the events and none of the secrets, in any encoding.
"""

import json
import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa
import structlog

from kasparro import create_app
from kasparro.config import secret_values
from kasparro.logs import REDACTED

SUFFIX = uuid.uuid4().hex[:12]
SECRETS = {
    "API key": f"CG-KEY-{SUFFIX}",
    # A character outside the Basic Multilingual Plane: JSON writes it as a surrogate pair.
    "admin token": f"ADMIN-TOKEN-\U0001f600-{SUFFIX}",
    # Characters a URL must escape, so the password appears in the URL only percent-encoded.
    "database password": f"DB/PASS@word:{SUFFIX}",
    "broker password": f"BROKER-PASS-{SUFFIX}",
    "Redis password": f"REDIS-PASS-{SUFFIX}",
    # Characters JSON and repr() escape, so the secret must be found in its escaped forms too.
    "Flower password": f'FLOWER"PASS\\é-{SUFFIX}',
}
ALL = tuple(SECRETS.values())
NOWHERE = "127.0.0.1:1"  # nothing listens here, and nothing in these tests connects
DATABASE_URI = sa.URL.create(
    "postgresql+psycopg",
    username="kasparro",
    password=SECRETS["database password"],
    host="127.0.0.1",
    port=1,
    database="kasparro",
).render_as_string(hide_password=False)
BROKER_URL = f"redis://:{SECRETS['broker password']}@{NOWHERE}/11"
REDIS_URL = f"redis://:{SECRETS['Redis password']}@{NOWHERE}/11"


def written_forms(secret: str) -> set[str]:
    """Return ``secret`` as written, as URLs encode it, and as JSON and ``repr`` escape it."""
    return {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        ascii(secret)[1:-1],
    }


def exposed(text: str) -> list[str]:
    """Return the names of the secrets found in ``text``, in any of their written forms."""
    names = [
        name
        for name, secret in SECRETS.items()
        if any(form in text for form in written_forms(secret))
    ]
    if SUFFIX in text and not names:  # every secret ends with it, however it is encoded
        names.append("a secret, written some other way")
    return names


@pytest.fixture(params=["json", "console"])
def log_format(request):
    """Return each log format in turn."""
    return request.param


@pytest.fixture
def secret_app(log_format, monkeypatch):
    """Return an app configured with every kind of secret, logging at DEBUG in ``log_format``."""
    monkeypatch.setenv("FLOWER_BASIC_AUTH", f"admin:{SECRETS['Flower password']}")
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": DATABASE_URI,
            "API_KEY": SECRETS["API key"],
            "ETL_ADMIN_TOKEN": SECRETS["admin token"],
            "REDIS_URL": REDIS_URL,
            "PUBLIC_RATE_LIMIT": "",
            "CELERY": {
                "broker_url": BROKER_URL,
                "result_backend": BROKER_URL,
                "task_always_eager": True,
            },
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": log_format,
        }
    )
    # The secrets are really configured: a leak below is the redactor's, not the setup's.
    assert set(ALL) <= set(secret_values(app.config))
    return app


@pytest.fixture
def stderr(secret_app, capsys):
    """Return a function that gives what was logged since the app was built."""
    capsys.readouterr()

    def read() -> str:
        captured = capsys.readouterr()
        return captured.out + captured.err

    return read


def assert_clean(logged: str, *events: str) -> None:
    """Check that every event was logged and that no secret was."""
    for event in events:
        assert event in logged, f"{event} was not logged:\n{logged}"
    leaks = exposed(logged)
    assert leaks == [], f"{', '.join(leaks)} leaked:\n{logged}"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(lambda s: {"api_key": s}, id="api_key"),
        pytest.param(lambda s: {"Authorization": f"Bearer {s}"}, id="Authorization"),
        pytest.param(lambda s: {"password": s}, id="password"),
        pytest.param(lambda s: {"token": s}, id="token"),
        pytest.param(lambda s: {"client_secret": s}, id="client_secret"),
        pytest.param(lambda s: {"x-cg-pro-api-key": s}, id="header-name"),
        pytest.param(lambda s: {"headers": {"Authorization": f"Bearer {s}"}}, id="nested"),
        pytest.param(lambda s: {"settings": [{"broker": {"password": s}}]}, id="deeply-nested"),
    ],
)
def test_secrets_under_secret_sounding_keys_are_redacted(stderr, fields):
    log = structlog.get_logger("kasparro.probe")
    for secret in ALL:
        log.info("probe.secret_key", **fields(secret))

    logged = stderr()
    assert_clean(logged, "probe.secret_key")
    assert logged.count(REDACTED) >= len(ALL)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(lambda v: {"api_key": v}, id="api_key"),
        pytest.param(lambda v: {"x-cg-demo-api-key": v}, id="header-name"),
        pytest.param(lambda v: {"headers": {"Authorization": f"Bearer {v}"}}, id="nested"),
        pytest.param(lambda v: {"users": [{"name": "ops", "password": v}]}, id="in-a-list"),
        pytest.param(lambda v: {"request": {"query": {"token": v}}}, id="deeply-nested"),
    ],
)
def test_a_secret_named_key_hides_its_value_even_when_it_is_not_a_configured_secret(stderr, fields):
    unconfigured = f"someone-elses-credential-{uuid.uuid4().hex[:8]}"

    structlog.get_logger("kasparro.probe").info("probe.unconfigured", **fields(unconfigured))

    logged = stderr()
    assert "probe.unconfigured" in logged
    assert unconfigured not in logged
    assert REDACTED in logged


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda s: f"glued{s}together", id="glued"),
        pytest.param(lambda s: f"redis://:{s}@cache:6379/0", id="url"),
        pytest.param(lambda s: f"postgresql://user:{quote(s, safe='')}@db/k", id="encoded-url"),
        pytest.param(lambda s: f"postgresql://user:{quote_plus(s)}@db/k", id="plus-encoded"),
        pytest.param(lambda s: f"line one\n  {s}\nline three", id="multi-line"),
        pytest.param(lambda s: f"{s} {s}", id="twice"),
    ],
)
def test_secrets_inside_longer_strings_are_redacted(stderr, wrap):
    log = structlog.get_logger("kasparro.probe")
    for secret in ALL:
        log.info(f"probe.in_text {wrap(secret)}", detail=wrap(secret))

    assert_clean(stderr(), "probe.in_text")


@pytest.mark.parametrize(
    "setting",
    [
        lambda app: app.config["SQLALCHEMY_DATABASE_URI"],
        lambda app: app.config["CELERY"]["broker_url"],
        lambda app: app.config["REDIS_URL"],
        lambda app: str(app.extensions["celery"].conf.result_backend),
    ],
    ids=["database", "broker", "redis", "result-backend"],
)
def test_a_configured_url_is_logged_without_its_password(secret_app, stderr, setting):
    url = setting(secret_app)
    assert "@127.0.0.1:1/" in url  # the URL as configured, password included

    structlog.get_logger("kasparro.probe").info("probe.url", url=url)
    logging.getLogger("celery").info("probe.url %s", url)

    logged = stderr()
    assert_clean(logged, "probe.url", url.split("@")[1])
    assert logged.count(REDACTED) == 2


@dataclass
class Connection:
    """Something whose text form shows a secret, as many library objects' do."""

    url: str


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(lambda s: {"outer": {"inner": {"deepest": s}}}, id="dict"),
        pytest.param(lambda s: [["a", s], "b"], id="list"),
        pytest.param(lambda s: ("a", (s,)), id="tuple"),
        pytest.param(lambda s: {s}, id="set"),
        pytest.param(lambda s: frozenset({s}), id="frozenset"),
        pytest.param(lambda s: {s: "as a key"}, id="dict-key"),
        pytest.param(lambda s: [{"hosts": ({"url": f"redis://:{s}@h"},)}], id="mixed"),
        pytest.param(lambda s: s.encode(), id="bytes"),
        pytest.param(lambda s: ValueError(f"bad value {s}"), id="exception"),
        pytest.param(lambda s: Connection(f"redis://:{s}@h"), id="object"),
    ],
)
def test_secrets_inside_nested_structures_are_redacted(stderr, shape):
    log = structlog.get_logger("kasparro.probe")
    for secret in ALL:
        log.info("probe.nested", value=shape(secret))
    structlog.get_logger("kasparro.probe").info("probe.positional %s", *[shape(s) for s in ALL])

    assert_clean(stderr(), "probe.nested", "probe.positional")


def fail_with(secret: str) -> None:
    """Raise an error whose message, cause and notes carry ``secret``; a local holds it too."""
    password = secret  # a traceback renderer that shows locals would print this
    try:
        raise ConnectionError(f"could not log in with {password!r}")
    except ConnectionError as cause:
        error = RuntimeError(f"connecting to redis://:{secret}@cache failed")
        error.add_note(f"the password was {secret}")
        raise error from cause


def log_exception(how: str, secret: str) -> None:
    """Log the error ``fail_with`` raises, the way ``how`` says."""
    structured = structlog.get_logger("kasparro.probe")
    library = logging.getLogger("celery.worker")
    try:
        fail_with(secret)
    except RuntimeError as error:
        if how == "structlog.exception":
            structured.exception("probe.failed")
        elif how == "structlog exc_info=True":
            structured.error("probe.failed", exc_info=True)
        elif how == "structlog exc_info=error":
            structured.error("probe.failed", exc_info=error, error=error)
        elif how == "logging.exception":
            library.exception("probe.failed while using %s", secret)
        elif how == "logging exc_info":
            library.error("probe.failed: %s", error, exc_info=error)
        elif how == "exception group":
            try:
                raise ExceptionGroup("probe.failed", [error, KeyError(secret)])
            except ExceptionGroup:
                structured.exception("probe.failed")


@pytest.mark.parametrize(
    "how",
    [
        "structlog.exception",
        "structlog exc_info=True",
        "structlog exc_info=error",
        "logging.exception",
        "logging exc_info",
        "exception group",
    ],
)
def test_secrets_in_exception_messages_and_tracebacks_are_redacted(stderr, how):
    for secret in ALL:
        log_exception(how, secret)

    logged = stderr()
    # The traceback itself was logged (with the cause and the note), only without the secrets.
    assert_clean(logged, "probe.failed", "Traceback", "ConnectionError", "the password was")


@pytest.mark.parametrize(
    ("logger", "message", "args"),
    [
        ("celery", "connected to %s", lambda s: (f"redis://:{s}@cache:6379/0",)),
        ("kombu.connection", "%s and %r", lambda s: (s, {"password": s})),
        ("celery.worker", "login %(user)s:%(password)s", lambda s: ({"user": "u", "password": s},)),
        ("urllib3.connectionpool", "GET %s?key=%s", lambda s: ("/coins", quote(s, safe=""))),
        ("sqlalchemy.engine", "bound values %r", lambda s: ((s, 1, None),)),
        ("werkzeug", "%s", lambda s: (ValueError(s),)),
    ],
    ids=["url", "repr-of-a-dict", "mapping", "encoded", "tuple", "exception"],
)
def test_secrets_in_standard_library_log_records_are_redacted(stderr, logger, message, args):
    for secret in ALL:
        logging.getLogger(logger).warning("probe.stdlib " + message, *args(secret))

    assert_clean(stderr(), "probe.stdlib", logger)


@contextmanager
def only_the_apps_handler():
    """Detach pytest's log capture, which turns a broken record into an error of its own."""
    root = logging.getLogger()
    others = [handler for handler in root.handlers if handler.get_name() != "kasparro"]
    for handler in others:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in others:
            root.addHandler(handler)


@pytest.mark.parametrize(
    ("message", "args"),
    [
        ("probe.broken %d", lambda s: (s,)),
        ("probe.broken %s %s", lambda s: (s,)),
        ("probe.broken %(missing)s", lambda s: ({"password": s},)),
        (lambda s: f"probe.broken {s} %d", lambda s: ("x",)),
    ],
    ids=["wrong-type", "too-few-args", "missing-key", "secret-in-the-format"],
)
def test_a_record_that_cannot_be_formatted_does_not_print_its_arguments(stderr, message, args):
    """``logging`` reports a broken record on stderr with its arguments, which may be secrets."""
    with only_the_apps_handler():
        for secret in ALL:
            text = message(secret) if callable(message) else message
            logging.getLogger("kombu").warning(text, *args(secret))

    assert_clean(stderr(), "probe.broken")


@pytest.mark.parametrize(
    "error",
    [
        lambda s: RuntimeError(f"cannot reach redis://:{s}@cache:6379/0"),
        lambda s: KeyError(s),
    ],
    ids=["runtime-error", "key-error"],
)
def test_an_unhandled_error_in_a_request_is_logged_without_secrets(secret_app, stderr, error):
    def explode():
        raise error(" ".join(ALL))

    secret_app.add_url_rule("/explode", view_func=explode)

    response = secret_app.test_client().get("/explode")

    assert response.status_code == 500
    assert exposed(response.get_data(as_text=True)) == []
    assert_clean(stderr(), "http.unhandled_error", "Traceback", "explode")


@pytest.mark.parametrize(
    "text",
    [
        "\\" * 10_000,
        "FLOWER" + "\\" * 10_000,
    ],
    ids=["backslashes", "a-secret-prefix-then-backslashes"],
)
def test_scrubbing_a_long_run_of_backslashes_takes_linear_time(stderr, text):
    """Escapes nest, so a secret may follow any run of backslashes; that must not cost n²."""
    started = time.perf_counter()
    structlog.get_logger("kasparro.probe").info("probe.backslashes", text=text)
    elapsed = time.perf_counter() - started

    assert "probe.backslashes" in stderr()
    assert elapsed < 2.0  # linear: milliseconds; quadratic: about 15 seconds


def test_every_flower_users_password_is_a_secret(monkeypatch):
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ann:first-pass-1,bob:second-pass-2")

    assert {"first-pass-1", "second-pass-2"} <= set(secret_values({}))
