"""Who may read GET /metrics: holders of METRICS_TOKEN, clients of METRICS_ALLOWED_NETWORKS.

The client's address is the one the rest of the app believes: the peer, or the X-Forwarded-For
entry written by a trusted proxy (PROXY_FIX_X_FOR, FORWARDED_ALLOW_IPS); never an entry the
client wrote itself.
"""

import pytest

from kasparro import create_app
from kasparro.extensions import db

TOKENS = ("metrics-token-4b5c6d7e", "another/token+with=signs")
NETWORKS = "10.0.0.0/8, 192.168.1.7,fd00::/8"


@pytest.fixture
def settings(settings):
    """Leave the public rate limit out: these tests ask many times from one address."""
    return {**settings, "PUBLIC_RATE_LIMIT": "", "REDIS_URL": ""}


def refused(response, status: int, *words: str) -> None:
    """Check ``response`` is a JSON refusal with ``status`` whose message has ``words``."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert body["code"] == status
    for word in words:
        assert word in body["message"]
    assert "kasparro_" not in response.get_data(as_text=True)


def served(response) -> None:
    """Check ``response`` is the metrics text."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    assert "kasparro_http_requests_total" in response.get_data(as_text=True)


def test_without_a_token_or_networks_metrics_answer_anyone(client):
    for address in ("127.0.0.1", "203.0.113.9", "2001:db8::1"):
        served(client.get("/metrics", environ_base={"REMOTE_ADDR": address}))


@pytest.mark.parametrize("token", TOKENS)
def test_a_metrics_token_is_asked_of_every_scrape(app, client, token):
    app.config["METRICS_TOKEN"] = token

    missing = client.get("/metrics")
    refused(missing, 401, "Authorization: Bearer", "METRICS_TOKEN")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    refused(client.get("/metrics", headers={"Authorization": f"Basic {token}"}), 401)
    refused(client.get("/metrics", headers={"Authorization": "Bearer "}), 401)
    for wrong in (token + "x", token[:-1], token.upper(), TOKENS[TOKENS.index(token) - 1]):
        refused(client.get("/metrics", headers={"Authorization": f"Bearer {wrong}"}), 403)
    refused(client.get(f"/metrics?token={token}"), 401)  # only the header counts

    served(client.get("/metrics", headers={"Authorization": f"Bearer {token}"}))
    served(client.get("/metrics", headers={"Authorization": f"bearer  {token} "}))


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("10.255.255.255", True),
        ("192.168.1.7", True),
        ("fd00::1", True),
        ("::ffff:10.0.0.5", True),  # an IPv4 client of a dual-stack socket
        ("192.168.1.8", False),
        ("11.0.0.1", False),
        ("127.0.0.1", False),
        ("2001:db8::1", False),
    ],
)
def test_metrics_answer_only_the_listed_networks(app, client, address, allowed):
    app.config["METRICS_ALLOWED_NETWORKS"] = NETWORKS

    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})

    if allowed:
        served(response)
    else:
        refused(response, 403, "METRICS_ALLOWED_NETWORKS")


@pytest.mark.parametrize(
    ("peer", "forwarded", "allowed"),
    [
        ("127.0.0.1", "10.9.9.9", True),  # the trusted proxy says the client is inside
        ("127.0.0.1", "203.0.113.5", False),  # ... or outside
        ("127.0.0.1", "10.0.0.1, 203.0.113.5", False),  # the client wrote the first entry itself
        ("203.0.113.5", "10.9.9.9", False),  # a peer that is no proxy cannot name itself
        ("10.3.3.3", "203.0.113.5", True),  # it is judged by its own address, whatever it says
    ],
)
def test_the_allowed_networks_judge_the_client_the_trusted_proxies_name(
    settings, peer, forwarded, allowed
):
    proxied = create_app(
        {
            **settings,
            "PROXY_FIX_X_FOR": 1,
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
            "METRICS_ALLOWED_NETWORKS": "10.0.0.0/8",
        }
    )

    try:
        response = proxied.test_client().get(
            "/metrics", environ_base={"REMOTE_ADDR": peer}, headers={"X-Forwarded-For": forwarded}
        )
    finally:
        with proxied.app_context():
            db.engine.dispose()

    if allowed:
        served(response)
    else:
        refused(response, 403)


@pytest.mark.parametrize(
    ("address", "token", "status"),
    [
        ("10.0.0.2", TOKENS[0], 200),
        ("10.0.0.2", None, 401),
        ("10.0.0.2", "wrong", 403),
        ("203.0.113.5", TOKENS[0], 403),
        ("203.0.113.5", None, 403),
    ],
)
def test_with_both_a_scrape_needs_the_network_and_the_token(app, client, address, token, status):
    app.config.update(METRICS_TOKEN=TOKENS[0], METRICS_ALLOWED_NETWORKS="10.0.0.0/8")
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address}, headers=headers)

    if status == 200:
        served(response)
    else:
        refused(response, status)


@pytest.mark.parametrize("networks", ["10.0.0.0/33", "10.0.0.0/8,not-a-network", "10.0.0.1/8"])
def test_a_network_list_that_is_not_one_stops_the_start(monkeypatch, networks):
    monkeypatch.setenv("METRICS_ALLOWED_NETWORKS", networks)

    with pytest.raises(ValueError, match="METRICS_ALLOWED_NETWORKS"):
        create_app({"LOG_LEVEL": "ERROR"})


def test_the_openapi_document_lists_the_refusals_of_metrics(client):
    responses = client.get("/openapi.json").get_json()["paths"]["/metrics"]["get"]["responses"]

    assert {"200", "401", "403", "503"} <= set(responses)
