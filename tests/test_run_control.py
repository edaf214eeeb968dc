"""``POST /etl/run`` checks the caller before the body; no body makes it fail or log a traceback.

Anonymous callers and wrong tokens are refused before the body is read, so they learn nothing
about the schema. A body nested too deeply for Python's JSON decoder, a number too long to parse,
or a body over the size limit gets a JSON 4xx, never a 500, and no traceback reaches the log.
"""

import io
import json

import pytest
import sqlalchemy as sa

from kasparro import create_app
from kasparro.extensions import db
from kasparro.models import EtlRun
from tests.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ERROR_KEYS = {"code", "status", "message"}
DEPTH = 5000  # far past Python's recursion limit (1000), well inside the 64 KiB body limit
OVERSIZED = json.dumps({"sources": ["csv1"], "padding": "x" * (70 * 1024)})

# (body as sent, its content type): each one is refused when the caller is not admitted.
BODIES = {
    "unknown-source": (json.dumps({"sources": ["nope"]}), "application/json"),
    "wrong-type": (json.dumps({"sources": "csv1"}), "application/json"),
    "unknown-field": (json.dumps({"other": 1}), "application/json"),
    "malformed": ('{"sources": [', "application/json"),
    "nested-arrays": ("[" * DEPTH + "]" * DEPTH, "application/json"),
    "oversized": (OVERSIZED, "application/json"),
    "valid": (json.dumps({"sources": ["csv1"]}), "application/json"),
}
# Words that would only appear if the body had been parsed and judged.
SCHEMA_WORDS = ("sources", "Must be one of", "Invalid JSON", "json", "Unknown field", "coingecko")


@pytest.fixture
def admin_client(app, client):
    """Return a client of an app whose run control is enabled with the test token."""
    app.config["ETL_ADMIN_TOKEN"] = ADMIN_TOKEN
    return client


def run_count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(EtlRun))


def post_body(client, name: str, headers: dict):
    data, content_type = BODIES[name]
    return client.post("/etl/run", data=data, content_type=content_type, headers=headers)


def assert_bare_refusal(response, status: int) -> None:
    """Check a JSON refusal that says nothing about the body or the schema."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.is_json, text
    body = response.get_json()
    assert set(body) == ERROR_KEYS, body
    for word in SCHEMA_WORDS:
        assert word not in body["message"], body


@pytest.mark.parametrize("body", sorted(BODIES))
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic YWRtaW46YWRtaW4="}, {"Authorization": "Bearer"}],
    ids=["no-header", "basic-scheme", "empty-bearer"],
)
def test_anonymous_callers_get_401_before_the_body_is_read(admin_client, body, headers):
    response = post_body(admin_client, body, headers)

    assert_bare_refusal(response, 401)
    assert response.get_json()["message"] == "send Authorization: Bearer <ETL_ADMIN_TOKEN>"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert run_count() == 0


@pytest.mark.parametrize("body", sorted(BODIES))
@pytest.mark.parametrize("token", ["wrong-token", ADMIN_TOKEN + "x"])
def test_a_wrong_token_gets_403_before_the_body_is_read(admin_client, body, token):
    response = post_body(admin_client, body, {"Authorization": f"Bearer {token}"})

    assert_bare_refusal(response, 403)
    assert run_count() == 0


@pytest.mark.parametrize("body", ["unknown-source", "nested-arrays", "oversized"])
def test_while_run_control_is_disabled_no_body_is_read(app, client, body):
    app.config["ETL_ADMIN_TOKEN"] = ""

    response = post_body(client, body, AUTH)

    assert_bare_refusal(response, 503)
    assert run_count() == 0


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ("[" * DEPTH + "]" * DEPTH, 400),
        (nested_objects(DEPTH), 400),
        ('{"sources": ' + "[" * DEPTH + "]" * DEPTH + "}", 400),
        ('{"sources": [' + "1" * 5000 + "]}", 400),  # past int's 4300-digit conversion limit
        (OVERSIZED, 413),
    ],
    ids=["nested-arrays", "nested-objects", "nested-in-sources", "5000-digit-number", "70-KiB"],
)
def test_pathological_bodies_get_a_json_4xx_and_no_traceback_in_the_log(
    admin_client, capfd, data, status
):
    capfd.readouterr()

    response = admin_client.post(
        "/etl/run", data=data, content_type="application/json", headers=AUTH
    )

    err = capfd.readouterr().err
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.is_json, text
    assert response.get_json()["code"] == status
    assert "Traceback" not in err
    assert "http.unhandled_error" not in err
    assert f'"status": {status}' in err  # the access log line is still written
    assert run_count() == 0


def test_an_oversized_body_without_a_length_gets_413_and_no_traceback(admin_client, capfd):
    """A chunked body (no Content-Length) is cut off at the limit too, as gunicorn delivers it."""
    capfd.readouterr()

    response = admin_client.post(
        "/etl/run",
        input_stream=io.BytesIO(OVERSIZED.encode()),
        content_type="application/json",
        headers=AUTH,
        environ_overrides={"wsgi.input_terminated": True},
    )

    err = capfd.readouterr().err
    assert response.status_code == 413, response.get_data(as_text=True)
    assert response.is_json
    assert "Traceback" not in err
    assert run_count() == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [({"sources": ["nope"]}, 422), ({"sources": "csv1"}, 422), ({"other": 1}, 422)],
)
def test_an_admitted_caller_still_learns_what_is_wrong_with_the_body(admin_client, body, status):
    response = admin_client.post("/etl/run", json=body, headers=AUTH)

    assert response.status_code == status
    assert "json" in response.get_json()["errors"]
    assert run_count() == 0


@pytest.fixture
def cors_client(settings):
    """Return a client of an app that allows one browser origin, with run control enabled."""
    application = create_app(
        {**settings, "CORS_ORIGINS": "https://ops.example", "ETL_ADMIN_TOKEN": ADMIN_TOKEN}
    )
    yield application.test_client()
    with application.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("requested_headers", ["authorization, content-type", "authorization"])
def test_a_cors_preflight_is_not_refused_for_want_of_a_token(cors_client, requested_headers):
    """Browsers send OPTIONS without credentials before the real request; it must not be 401."""
    response = cors_client.options(
        "/etl/run",
        headers={
            "Origin": "https://ops.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": requested_headers,
        },
    )

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://ops.example"
