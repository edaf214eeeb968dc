"""Every answer carries Flask-Talisman's security headers, and each page the policy it needs.

The dashboard, the JSON answers (errors too) and ``/metrics`` get one policy: this origin only,
no inline script or style. ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) get only the exceptions
their pages need, and a real headless Chromium shows that they still work under them, loading
nothing from elsewhere. Plain HTTP is never redirected; HSTS goes only on answers over HTTPS.
"""

import json
import threading

import pytest
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from tests.test_dashboard_browser import WAIT_SECONDS, QuietHandler, browser  # noqa: F401

SELF_ONLY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
POLICIES = {
    "/": SELF_ONLY,
    "/data?page_size=5": SELF_ONLY,
    "/stats": SELF_ONLY,
    "/health": SELF_ONLY,
    "/runs?limit=0": SELF_ONLY,  # a 422 with a JSON body
    "/no-such-page": SELF_ONLY,  # a 404 with a JSON body
    "/data?" + "a=1&" * 600: SELF_ONLY,  # a 414, answered before any view
    "/openapi.json": SELF_ONLY,
    "/metrics": SELF_ONLY,
    "/static/dashboard/dashboard.js": SELF_ONLY,
    "/docs": f"{SELF_ONLY}; script-src 'self' 'unsafe-inline'",
    "/redoc": f"{SELF_ONLY}; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:",
}
EVERY_ANSWER = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "browsing-topics=()",
}
HSTS = "Strict-Transport-Security"
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
ONE_YEAR = "max-age=31556926"


def security_headers(response) -> dict[str, str | None]:
    """Return the security headers of ``response`` (``None`` for those it lacks)."""
    names = ["Content-Security-Policy", *EVERY_ANSWER, HSTS]
    return {name: response.headers.get(name) for name in names}


@pytest.mark.parametrize("path", list(POLICIES))
def test_each_answer_carries_the_headers_and_its_pages_policy(client, path):
    response = client.get(path)
    response.close()  # a static file's answer holds the file open

    assert response.status_code < 500
    assert security_headers(response) == {
        "Content-Security-Policy": POLICIES[path],
        **EVERY_ANSWER,
        HSTS: None,  # plain HTTP: a browser ignores it there, and a laptop run has no HTTPS
    }


@pytest.mark.parametrize("path", ["/", "/data", "/docs", "/redoc"])
def test_plain_http_is_served_not_redirected_to_https(client, path):
    response = client.get(path, base_url="http://kasparro.test")

    assert response.status_code == 200
    assert "Location" not in response.headers


@pytest.mark.parametrize(
    ("base_url", "headers"),
    [
        ("https://kasparro.test", {}),
        ("http://kasparro.test", {"X-Forwarded-Proto": "https"}),  # TLS ended at the proxy
    ],
)
@pytest.mark.parametrize("path", ["/", "/stats", "/docs"])
def test_answers_over_https_tell_the_browser_to_keep_to_https(client, base_url, headers, path):
    response = client.get(path, base_url=base_url, headers=headers)

    assert response.status_code == 200
    # Not includeSubDomains: the operator's other hosts are not the app's to decide.
    assert response.headers[HSTS] == ONE_YEAR
    assert response.headers["Content-Security-Policy"] == POLICIES[path]


def test_each_page_keeps_its_own_policy_whatever_was_served_before(client):
    """The headers are worked out once per page and scheme: no page gets another one's."""
    order = ["/docs", "/", "/redoc", "/docs", "/stats", "/redoc", "/", "/docs"]

    served = [client.get(path).headers["Content-Security-Policy"] for path in order]
    over_https = [
        client.get(path, base_url="https://kasparro.test").headers.get(HSTS) for path in order
    ]
    over_http = [client.get(path).headers.get(HSTS) for path in order]

    assert served == [POLICIES[path] for path in order]
    assert over_https == [ONE_YEAR] * len(order)
    assert over_http == [None] * len(order)


def test_a_kept_answer_carries_the_same_headers_as_the_first(client):
    first = client.get("/data?page_size=3")
    kept = client.get("/data?page_size=3")

    assert kept.get_json()["data"] == first.get_json()["data"]
    assert security_headers(kept) == security_headers(first)


@pytest.fixture
def served(app):
    """Serve the app on loopback (werkzeug, threaded) and yield its URL."""
    http = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join()


def operation_count(client) -> int:
    """Return how many operations the OpenAPI document describes."""
    spec = json.loads(client.get("/openapi.json").get_data())
    methods = {"get", "post", "put", "patch", "delete"}
    return sum(len(methods & set(item)) for item in spec["paths"].values())


def blocked(driver) -> list[str]:
    """Return the browser's console messages that report a Content-Security-Policy violation."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]


def wait_for(driver, script: str):
    """Wait until ``script`` returns something true, and return it."""
    return WebDriverWait(driver, WAIT_SECONDS).until(lambda d: d.execute_script(script))


def test_swagger_ui_runs_under_its_policy(browser, served, client):  # noqa: F811
    browser.get_log("browser")  # what earlier pages logged
    browser.get(f"{served}/docs")

    shown = wait_for(browser, "return document.querySelectorAll('.opblock').length")
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map((entry) => entry.name)"
    )

    assert shown == operation_count(client)
    assert blocked(browser) == []
    assert f"{served}/openapi.json" in fetched
    assert [url for url in fetched if not url.startswith(f"{served}/")] == []


def test_redoc_runs_under_its_policy_and_searches_in_its_worker(browser, served, client):  # noqa: F811
    browser.get_log("browser")
    browser.get(f"{served}/redoc")

    shown = wait_for(
        browser, "return document.querySelectorAll('[data-section-id*=\"/paths/\"]').length"
    )
    browser.find_element("css selector", "input.search-input").send_keys("health")
    found = wait_for(
        browser,
        "return [...document.querySelectorAll('[data-role=\"search:results\"] label')]"
        ".map((label) => label.innerText)",
    )
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map((entry) => entry.name)"
    )
    violations = blocked(browser)

    assert shown == operation_count(client)
    assert any("Report whether the database" in text for text in found), found
    # The one thing ReDoc tries to fetch from elsewhere, the Redocly logo in its side bar, is
    # refused; its styles, its script and its search worker are not.
    assert [url for url in fetched if not url.startswith(f"{served}/")] == [REDOCLY_LOGO]
    assert len(violations) == 1, violations
    assert REDOCLY_LOGO in violations[0]
