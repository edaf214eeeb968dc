"""Under the api role's real gunicorn, an over-long or over-large request gets the app's JSON.

gunicorn refuses a request line, a header count or a header field over its limits with a page of
its own, before the app sees the request. docker/gunicorn.conf.py sets those limits above the
app's (kasparro/routes/request_limits.py), so the app's limits bind first and answer in JSON.
What gunicorn still answers itself, README "Request limits" lists; the last tests pin it down.

gunicorn runs with the flags the entrypoint gives it (read from docker/entrypoint.sh), on
loopback, over a SQLite copy of the migrated template. Requests are written on a raw socket, so
nothing between the test and gunicorn mends or refuses them first.
"""

import json
import shutil
import socket

import pytest

from kasparro.routes import request_limits
from scripts.bench_api import gunicorn, production_gunicorn_flags
from tests.conftest import ADMIN_TOKEN
from tests.processes import ROOT

GUNICORN_CONF = ROOT / "docker" / "gunicorn.conf.py"


@pytest.fixture(scope="module")
def server(sqlite_template, tmp_path_factory):
    """Yield the (host, port) of the api role's gunicorn, serving a SQLite copy on loopback."""
    workdir = tmp_path_factory.mktemp("gunicorn")
    shutil.copy(sqlite_template, workdir / "etl.db")
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{workdir / 'etl.db'}",
        "ETL_ADMIN_TOKEN": ADMIN_TOKEN,
        "CELERY_BROKER_URL": "",
        "REDIS_URL": "",
        "PUBLIC_RATE_LIMIT": "",
        "LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": "1",
    }
    flags = production_gunicorn_flags(env)
    with gunicorn("wsgi:app", flags, env, ROOT, workdir / "api.log", "/health") as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def exchange(server, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send a raw request and return the status, headers (lower-cased names) and body."""
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_part, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, payload


def request(target: str, *fields: str, method: str = "GET") -> bytes:
    """Return a request head for ``target`` with ``fields`` (``Name: value``) and ``close``."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *fields, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def assert_json_error(answer, status: int) -> dict:
    code, headers, payload = answer
    assert code == status, payload[:300]
    assert headers["content-type"] == "application/json", (headers, payload[:300])
    body = json.loads(payload)
    assert body["code"] == status
    assert headers.get("x-request-id")  # the app answered: its hooks ran
    return body


def line_of(length: int, path: str = "/data/") -> str:
    """Return a request target whose request line (``GET … HTTP/1.1``) is ``length`` bytes."""
    return path + "a" * (length - len(f"GET {path} HTTP/1.1"))


@pytest.mark.parametrize("length", [4095, 5000, 8190])
def test_a_request_line_over_the_apps_limit_gets_its_json_414(server, length):
    body = assert_json_error(exchange(server, request(line_of(length))), 414)

    assert str(request_limits.MAX_REQUEST_LINE) in body["message"]


@pytest.mark.parametrize("query_bytes", [2049, 6000])
def test_a_query_string_over_its_limit_gets_json_414(server, query_bytes):
    target = "/data?asset=" + "b" * (query_bytes - len("asset="))

    assert_json_error(exchange(server, request(target)), 414)


@pytest.mark.parametrize("count", [101, 150, 199])
def test_too_many_header_fields_get_json_431(server, count):
    fields = [f"X-Field-{i}: {i}" for i in range(count - 2)]  # Host and Connection besides

    body = assert_json_error(exchange(server, request("/health", *fields)), 431)

    assert str(request_limits.MAX_HEADER_FIELDS) in body["message"]


@pytest.mark.parametrize("size", [8191, 12000, 16380])
def test_a_header_field_over_its_limit_gets_json_431(server, size):
    field = "X-Big: " + "c" * (size - len("X-Big: ") - 2)  # the size counts the line's CRLF

    body = assert_json_error(exchange(server, request("/data", field)), 431)

    assert "X-Big" in body["message"]


def test_a_request_line_at_the_limit_reaches_the_routes(server):
    target = line_of(request_limits.MAX_REQUEST_LINE, "/no-such-page/")

    assert_json_error(exchange(server, request(target)), 404)


def test_header_fields_at_their_limits_are_served(server):
    fields = [f"X-Field-{i}: {i}" for i in range(request_limits.MAX_HEADER_FIELDS - 3)]
    big = "X-Big: " + "c" * (request_limits.MAX_HEADER_FIELD_BYTES - len("X-Big: ") - 2)

    code, _, payload = exchange(server, request("/health", *fields, big))

    assert code == 200, payload[:300]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (request("/data?cursor=not-a-cursor"), 400),
        (request("/no-such-page"), 404),
        (request("/data", method="DELETE"), 405),
        (request("/etl/run", "Content-Type: application/json", "Content-Length: 3", method="POST")
         + b"{x}", 401),
    ],
    ids=["bad-cursor", "unknown-path", "wrong-method", "post-without-token"],
)  # fmt: skip
def test_refusals_the_app_makes_are_json(server, head, status):
    assert_json_error(exchange(server, head), status)


def test_a_malformed_json_body_from_an_admitted_caller_gets_json_400(server):
    head = request(
        "/etl/run",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "Content-Type: application/json",
        "Content-Length: 13",
        method="POST",
    )

    assert_json_error(exchange(server, head, b'{"sources": ['), 400)


# What gunicorn still answers itself (README "Request limits"): past its own limits, and what is
# not HTTP/1.1 it can parse. These pin down what the README says.


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (request(line_of(8191)), 414),
        (request("/health", *[f"X-F-{i}: {i}" for i in range(201)]), 431),
        (request("/health", "X-Big: " + "c" * 16400), 431),
        (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
        (b"GET /he alth HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /health?\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\nHost: x\n\n", 400),
        (request("/etl/run", "Transfer-Encoding: gzip", method="POST"), 400),
        (request("/health", "Expect: 200-ok"), 417),
    ],
    ids=["request-line-past-8190", "over-200-fields", "field-past-16380", "http-9.9",
         "header-without-colon", "space-in-target", "non-ascii-target", "bare-lf",
         "unknown-transfer-coding", "unknown-expectation"],
)  # fmt: skip
def test_what_gunicorn_still_refuses_itself(server, head, status):
    code, headers, _ = exchange(server, head)

    assert code == status
    assert "x-request-id" not in headers  # the app never saw it


def test_gunicorns_limits_sit_above_the_apps():
    namespace: dict = {}
    exec(compile(GUNICORN_CONF.read_text(), str(GUNICORN_CONF), "exec"), namespace)

    assert namespace["limit_request_line"] > request_limits.MAX_REQUEST_LINE
    assert namespace["limit_request_fields"] > request_limits.MAX_HEADER_FIELDS
    assert namespace["limit_request_field_size"] > request_limits.MAX_HEADER_FIELD_BYTES
