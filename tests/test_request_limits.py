"""Every route holds a request to the same limits before reading it, and answers in JSON.

A request line over 4094 bytes or a query string over 2048 gets 414, more than 100 header fields
or a field over 8190 bytes gets 431, a query string that is not UTF-8 gets 400: each with a JSON
body, a request id and an access-log line, whatever the route, known or not. The OpenAPI document
says so: every operation lists 400, 414 and 431, and every rate-limited one 429, the two POST
routes among them. (tests/test_gunicorn_limits.py checks the same limits under gunicorn.)
"""

import json

import pytest

from kasparro.routes.request_limits import (
    MAX_HEADER_FIELD_BYTES,
    MAX_HEADER_FIELDS,
    MAX_QUERY_STRING,
    MAX_REQUEST_LINE,
)

EVERY_ROUTE = ("400", "414", "431")
NOT_RATE_LIMITED = {("get", "/health"), ("get", "/metrics")}
PATH_VALUES = {"{run_id}": "1", "{asset_id}": "bitcoin"}


def operations(document) -> list[tuple[str, str, dict]]:
    """Return every (method, path, operation) of an OpenAPI document."""
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


def concrete(path: str) -> str:
    for name, value in PATH_VALUES.items():
        path = path.replace(name, value)
    return path


@pytest.fixture
def document(client):
    """Return the OpenAPI document the app serves."""
    return client.get("/openapi.json").get_json()


def assert_json_refusal(response, status: int, capfd=None) -> dict:
    text = response.get_data(as_text=True)
    assert response.status_code == status, text[:300]
    assert response.mimetype == "application/json", text[:300]
    assert response.get_json()["code"] == status
    assert response.headers["X-Request-ID"]
    if capfd is not None:
        logged = [json.loads(line) for line in capfd.readouterr().err.splitlines() if "{" in line]
        assert any(e.get("event") == "http.request" and e["status"] == status for e in logged)
    return response.get_json()


def many_headers(count: int) -> dict[str, str]:
    return {f"X-Field-{i}": str(i) for i in range(count)}


def test_every_operation_refuses_too_many_header_fields_with_json_431(client, document, capfd):
    for method, path, _ in operations(document):
        capfd.readouterr()
        response = client.open(
            concrete(path), method=method.upper(), headers=many_headers(MAX_HEADER_FIELDS + 1)
        )

        body = assert_json_refusal(response, 431, capfd)
        assert f"at most {MAX_HEADER_FIELDS}" in body["message"], (method, path)


def test_every_operation_refuses_a_header_field_too_large_with_json_431(client, document):
    big = "v" * MAX_HEADER_FIELD_BYTES
    for method, path, _ in operations(document):
        response = client.open(concrete(path), method=method.upper(), headers={"X-Big": big})

        body = assert_json_refusal(response, 431)
        assert "X-Big" in body["message"], (method, path)


def test_every_operation_refuses_an_over_long_query_string_with_json_414(client, document):
    query = "x=" + "1" * MAX_QUERY_STRING
    for method, path, _ in operations(document):
        response = client.open(f"{concrete(path)}?{query}", method=method.upper())

        body = assert_json_refusal(response, 414)
        assert "query string" in body["message"], (method, path)


@pytest.mark.parametrize(("over", "status"), [(0, 200), (1, 414)])
def test_a_query_string_of_exactly_the_limit_is_read_and_one_byte_more_is_not(client, over, status):
    # /runs ignores an argument it does not know: only the query's length decides.
    query = "source=csv1&limit=1&x=" + "1" * (MAX_QUERY_STRING - 22 + over)
    assert len(query) == MAX_QUERY_STRING + over

    response = client.get(f"/runs?{query}")

    assert response.status_code == status, response.get_json()


@pytest.mark.parametrize(
    "path",
    ["/assets/{}", "/assets/{}/history", "/runs/{}", "/no-such-page/{}", "/{}"],
)
@pytest.mark.parametrize("line", [MAX_REQUEST_LINE + 1, MAX_REQUEST_LINE + 900])
def test_a_request_line_over_the_limit_gets_json_414_before_any_route(client, capfd, path, line):
    filler = "a" * (line - len(f"GET {path.format('')} HTTP/1.1"))
    capfd.readouterr()

    body = assert_json_refusal(client.get(path.format(filler)), 414, capfd)

    assert f"request line is longer than {MAX_REQUEST_LINE}" in body["message"]


@pytest.mark.parametrize("path", ["/assets/{}", "/no-such-page/{}"])
def test_a_request_line_at_the_limit_reaches_its_route(client, path):
    filler = "a" * (MAX_REQUEST_LINE - len(f"GET {path.format('')} HTTP/1.1"))

    response = client.get(path.format(filler))

    assert response.status_code == 404, response.get_data(as_text=True)[:300]


def test_header_fields_within_the_limits_are_served(client):
    headers = {**many_headers(MAX_HEADER_FIELDS - 10), "X-Big": "v" * 8000}

    response = client.get("/health", headers=headers)

    assert response.status_code == 200, response.get_data(as_text=True)[:300]


# WSGI hands the query string over as latin-1 text: "\xff" is the byte 0xFF.
@pytest.mark.parametrize("query", ["asset=%ff\xff", "\xc3(", "symbol=\xed\xa0\x80"])
def test_a_query_string_that_is_not_utf8_gets_json_400_on_every_operation(client, document, query):
    for method, path, _ in operations(document):
        response = client.open(
            concrete(path), method=method.upper(), environ_overrides={"QUERY_STRING": query}
        )

        body = assert_json_refusal(response, 400)
        assert "not valid UTF-8" in body["message"], (method, path)


def test_the_document_lists_400_414_and_431_on_every_operation(document):
    for method, path, operation in operations(document):
        for status in EVERY_ROUTE:
            response = operation["responses"].get(status)
            assert response, (method, path, status)
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_the_document_lists_429_with_retry_after_on_every_rate_limited_operation(document):
    limited = [op for op in operations(document) if op[:2] not in NOT_RATE_LIMITED]
    assert {("post", "/etl/run"), ("post", "/assets/aliases"), ("get", "/")} <= {
        op[:2] for op in limited
    }
    for method, path, operation in limited:
        response = operation["responses"].get("429")
        assert response, (method, path)
        assert "Retry-After" in response["headers"], (method, path)
    for method, path, operation in operations(document):
        if (method, path) in NOT_RATE_LIMITED:
            assert "429" not in operation["responses"], (method, path)


def test_the_414_the_document_describes_is_the_one_answered(document):
    description = document["paths"]["/data"]["get"]["responses"]["414"]["description"]

    assert str(MAX_REQUEST_LINE) in description
    assert str(MAX_QUERY_STRING) in description
