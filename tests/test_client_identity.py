"""Public request limits key on the real client, also behind proxies, and spoofing does not pay.

The app sits behind ``PROXY_FIX_X_FOR`` proxies. Each one appends the address it received the
request from to ``X-Forwarded-For``, and the last of them connects to the app, so the app sees it
as the peer (``REMOTE_ADDR``). Only the last ``PROXY_FIX_X_FOR`` entries were written by proxies;
anything before them came from the client and is not believed. And only a peer inside
``FORWARDED_ALLOW_IPS`` is a proxy at all: a peer that reaches the app directly is its own client
address, whatever header it sends.
"""

import pytest

from kasparro import create_app
from kasparro.extensions import db

LIMIT = 2
PROXY = "10.0.0.5"  # the address the last proxy connects from
TRUSTED = "10.0.0.0/8"
CLIENTS = ["203.0.113.7", "198.51.100.23", "2001:db8::42"]
EDGES = ["104.16.0.1", "172.64.0.9"]  # first proxies (e.g. a CDN edge) that clients come through


@pytest.fixture
def make_client(settings):
    """Return a function making a client of an app with a small public limit, kept in memory."""
    made = []

    def make(**config):
        application = create_app(
            {
                **settings,
                "PUBLIC_RATE_LIMIT": f"{LIMIT}/minute",
                "REDIS_URL": "",
                "FORWARDED_ALLOW_IPS": TRUSTED,
                **config,
            }
        )
        made.append(application)
        return application.test_client()

    yield make
    for application in made:
        with application.app_context():
            db.engine.dispose()


def through_proxies(client, hops: int, address: str, sent_by_client: str | None = None):
    """GET /runs as ``address`` would arrive through ``hops`` proxies; return the status code.

    The first proxy appends the client's address to whatever the client sent; each further proxy
    appends the address of the proxy before it.
    """
    chain = [sent_by_client] if sent_by_client else []
    chain.append(address)
    chain += EDGES[: hops - 1]
    response = client.get(
        "/runs",
        headers={"X-Forwarded-For": ", ".join(chain)},
        environ_base={"REMOTE_ADDR": PROXY},
    )
    return response.status_code


@pytest.mark.parametrize("hops", [1, 2])
def test_each_client_behind_the_proxies_gets_its_own_limit(make_client, hops):
    client = make_client(PROXY_FIX_X_FOR=hops)

    statuses = {
        address: [through_proxies(client, hops, address) for _ in range(LIMIT + 1)]
        for address in CLIENTS
    }

    assert statuses == {address: [200] * LIMIT + [429] for address in CLIENTS}


@pytest.mark.parametrize("hops", [1, 2])
@pytest.mark.parametrize("forged", [["1.2.3.4", "5.6.7.8", "9.9.9.9"], ["10.0.0.5", "::1", "x"]])
def test_a_clients_own_forwarded_for_does_not_become_its_identity(make_client, hops, forged):
    """A client that sends a new X-Forwarded-For each time is still one client to the limit."""
    client = make_client(PROXY_FIX_X_FOR=hops)
    attacker, bystander = CLIENTS[0], CLIENTS[1]

    attempts = [through_proxies(client, hops, attacker, sent_by_client=f) for f in forged]

    assert attempts == [200] * LIMIT + [429]
    assert through_proxies(client, hops, bystander, sent_by_client=forged[0]) == 200


@pytest.mark.parametrize("peer", ["198.51.100.99", "2001:db8::99", "192.168.1.20"])
@pytest.mark.parametrize("hops", [1, 2])
def test_a_peer_outside_the_trusted_proxies_is_not_believed(make_client, peer, hops):
    """A peer that talks to the app directly cannot pick its identity with the header."""
    client = make_client(PROXY_FIX_X_FOR=hops)

    statuses = [
        client.get(
            "/runs",
            headers={"X-Forwarded-For": f"203.0.113.{n}, 104.16.0.{n}"},
            environ_base={"REMOTE_ADDR": peer},
        ).status_code
        for n in range(LIMIT + 1)
    ]

    assert statuses == [200] * LIMIT + [429]


@pytest.mark.parametrize(
    ("allowed", "peer"),
    [
        ("*", "198.51.100.99"),
        ("127.0.0.1,10.0.0.0/8", PROXY),
        ("10.0.0.5 , ::1", PROXY),
        ("10.0.0.0/8", ""),  # a UNIX socket has no peer address; only local processes reach it
        ("10.0.0.0/8", f"::ffff:{PROXY}"),  # an IPv4 proxy seen on a dual-stack socket
    ],
)
def test_a_peer_inside_the_trusted_proxies_is_believed(make_client, allowed, peer):
    client = make_client(PROXY_FIX_X_FOR=1, FORWARDED_ALLOW_IPS=allowed)

    statuses = [
        client.get(
            "/runs",
            headers={"X-Forwarded-For": address},
            environ_base={"REMOTE_ADDR": peer},
        ).status_code
        for address in CLIENTS
        for _ in range(LIMIT)
    ]

    assert statuses == [200] * (LIMIT * len(CLIENTS))


@pytest.mark.parametrize("hops", [0, 1])
def test_without_proxies_configured_the_header_is_ignored(make_client, hops):
    """With no proxy hops, or a peer that is not a proxy, the peer address is the identity."""
    client = make_client(PROXY_FIX_X_FOR=hops, FORWARDED_ALLOW_IPS="10.0.0.0/8" if hops else "*")

    statuses = [
        client.get(
            "/runs",
            headers={"X-Forwarded-For": address},
            environ_base={"REMOTE_ADDR": "198.51.100.99"},
        ).status_code
        for address in CLIENTS
    ]

    assert statuses == [200] * LIMIT + [429]


@pytest.mark.parametrize("allowed", ["10.0.0.0/33", "not-an-address", "10.0.0.1/8"])
def test_a_malformed_trusted_proxy_list_stops_the_start(settings, allowed):
    with pytest.raises(ValueError, match="FORWARDED_ALLOW_IPS"):
        create_app({**settings, "PROXY_FIX_X_FOR": 1, "FORWARDED_ALLOW_IPS": allowed})


@pytest.mark.parametrize(
    "path",
    ["/", "/assets", "/assets/bitcoin", "/assets/unresolved", "/anomalies", "/compare-runs"],
)
def test_the_dashboard_and_the_asset_and_analysis_routes_count_against_the_limit(make_client, path):
    client = make_client()

    statuses = [
        client.get(path, environ_base={"REMOTE_ADDR": CLIENTS[0]}).status_code
        for _ in range(LIMIT + 1)
    ]

    assert 429 not in statuses[:LIMIT]
    assert statuses[LIMIT] == 429


def test_prometheus_is_never_told_to_wait(make_client):
    client = make_client()

    statuses = {
        client.get("/metrics", environ_base={"REMOTE_ADDR": CLIENTS[0]}).status_code
        for _ in range(LIMIT + 1)
    }

    assert statuses == {200}
