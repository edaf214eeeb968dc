"""A POST body is read as JSON or refused with 415: never ignored, never misread.

``curl -d`` without a header sends its body as a form. Read as "no JSON body", it used to mean
"all sources" on ``POST /etl/run`` (CoinGecko's call budget spent) and a misleading 422 on
``POST /assets/aliases``. Only an empty body may stand for the defaults.
"""

import json

import pytest
import sqlalchemy as sa

from kasparro.extensions import db
from kasparro.models import AssetAlias, EtlRun
from tests.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RUN_BODY = json.dumps({"sources": ["csv2"]})
ALIAS_BODY = json.dumps({"asset_id": "bitcoin", "name": "XBT Coin"})

# (body, Content-Type as sent; None sends no header): a body that is there but is not JSON.
NOT_JSON = {
    "curl-d-json-text": ("{body}", "application/x-www-form-urlencoded"),
    "form-fields": ("sources=csv2&asset_id=bitcoin&name=XBT", "application/x-www-form-urlencoded"),
    "multipart": (
        '--b\r\nContent-Disposition: form-data; name="sources"\r\n\r\ncsv2\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
    ),
    "text-plain-json-text": ("{body}", "text/plain"),
    "no-content-type": ("{body}", None),
    "xml": ("<sources><source>csv2</source></sources>", "application/xml"),
}


@pytest.fixture
def admin_client(app, client):
    """Return a client of an app whose admin token is set."""
    app.config["ETL_ADMIN_TOKEN"] = ADMIN_TOKEN
    return client


def post(client, path: str, data: str, content_type: str | None):
    """POST ``data`` to ``path`` with the token, and exactly the Content-Type given (or none)."""
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post(path, data=data.encode(), headers=headers)


def runs() -> list[tuple[str, str]]:
    return db.session.execute(sa.select(EtlRun.source, EtlRun.trigger)).all()


def aliases() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(AssetAlias))


def assert_refused_as_not_json(response) -> None:
    text = response.get_data(as_text=True)
    assert response.status_code == 415, text
    assert response.is_json, text
    body = response.get_json()
    assert body["code"] == 415
    assert "application/json" in body["message"], body


@pytest.mark.parametrize("name", sorted(NOT_JSON))
def test_a_run_request_whose_body_is_not_json_is_refused_and_starts_nothing(
    admin_client, coingecko, name
):
    template, content_type = NOT_JSON[name]

    response = post(admin_client, "/etl/run", template.format(body=RUN_BODY), content_type)

    assert_refused_as_not_json(response)
    assert runs() == []
    assert coingecko.page_requests() == []  # the call budget is untouched


@pytest.mark.parametrize("name", sorted(NOT_JSON))
def test_an_alias_request_whose_body_is_not_json_is_refused_and_adds_nothing(admin_client, name):
    template, content_type = NOT_JSON[name]

    response = post(admin_client, "/assets/aliases", template.format(body=ALIAS_BODY), content_type)

    assert_refused_as_not_json(response)
    assert aliases() == 0


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"]
)
def test_a_json_body_is_read_as_sent(admin_client, coingecko, content_type):
    run = post(admin_client, "/etl/run", RUN_BODY, content_type)
    alias = post(admin_client, "/assets/aliases", ALIAS_BODY, content_type)

    assert run.status_code == 202, run.get_data(as_text=True)
    assert [r["source"] for r in run.get_json()["runs"]] == ["csv2"]
    assert runs() == [("csv2", "api")]
    assert coingecko.page_requests() == []
    assert alias.status_code == 201, alias.get_data(as_text=True)
    assert aliases() == 1


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_an_empty_body_still_runs_every_source(admin_client, content_type):
    response = post(admin_client, "/etl/run", "", content_type)

    assert response.status_code == 202, response.get_data(as_text=True)
    assert sorted(source for source, _ in runs()) == ["coingecko_api", "csv1", "csv2"]


def test_an_empty_alias_body_is_told_what_is_missing(admin_client):
    response = post(admin_client, "/assets/aliases", "", None)

    assert response.status_code == 422, response.get_data(as_text=True)
    assert aliases() == 0


@pytest.mark.parametrize("path", ["/etl/run", "/assets/aliases"])
def test_a_caller_without_the_token_learns_nothing_of_the_body_rules(client, app, path):
    app.config["ETL_ADMIN_TOKEN"] = ADMIN_TOKEN

    response = client.post(
        path, data="sources=csv2", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 401
    assert "json" not in response.get_json()["message"].lower()


def test_the_document_lists_415_on_both_post_routes(client):
    paths = client.get("/openapi.json").get_json()["paths"]

    for path in ("/etl/run", "/assets/aliases"):
        assert "415" in paths[path]["post"]["responses"], path


@pytest.mark.parametrize(
    ("path", "disabled"),
    [
        ("/etl/run", "run control over HTTP is disabled"),
        ("/assets/aliases", "corrections over HTTP are disabled"),
    ],
)
@pytest.mark.parametrize("body", ["", ALIAS_BODY, "sources=csv2"])
def test_without_an_admin_token_each_post_route_says_what_is_disabled(
    app, client, path, disabled, body
):
    app.config["ETL_ADMIN_TOKEN"] = ""

    response = post(client, path, body, "application/json")

    assert response.status_code == 503
    message = response.get_json()["message"]
    assert message == f"{disabled}: ETL_ADMIN_TOKEN is not set", message
    assert runs() == [] and aliases() == 0
