"""Proxy handling is one step of the factory, in its own module, and keeps its rules.

The app is probed through a route added for the test that answers with the client address the
app believes (``request.remote_addr``), so each case reads the rule itself rather than its effect
on the request limits (``tests/test_client_identity.py`` covers those).
"""

import pytest
from flask import request

import kasparro
from kasparro import create_app
from kasparro.extensions import db
from kasparro.middleware import ProxiedWhenTrusted, trusted_proxies

PROXY = "10.0.0.5"


@pytest.fixture
def believed(settings):
    """Return a function answering the client address an app with ``config`` believes."""
    made = []

    def ask(config: dict, peer: str, forwarded_for: str | None = None) -> str:
        application = create_app({**settings, **config})
        application.add_url_rule("/probe/client", "probe_client", lambda: request.remote_addr)
        made.append(application)
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        response = application.test_client().get(
            "/probe/client", headers=headers, environ_base={"REMOTE_ADDR": peer}
        )
        assert response.status_code == 200
        return response.get_data(as_text=True)

    yield ask
    for application in made:
        with application.app_context():
            db.engine.dispose()


@pytest.mark.parametrize(
    ("hops", "forwarded_for", "client"),
    [
        (1, "203.0.113.7", "203.0.113.7"),
        (1, "1.2.3.4, 203.0.113.7", "203.0.113.7"),  # the client's own entry is left of it
        (2, "203.0.113.7, 104.16.0.1", "203.0.113.7"),
        (2, "9.9.9.9, 2001:db8::42, 104.16.0.1", "2001:db8::42"),
    ],
)
def test_a_trusted_proxy_names_the_client_by_the_entries_the_proxies_wrote(
    believed, hops, forwarded_for, client
):
    config = {"PROXY_FIX_X_FOR": hops, "FORWARDED_ALLOW_IPS": "10.0.0.0/8"}

    assert believed(config, PROXY, forwarded_for) == client


@pytest.mark.parametrize(
    ("config", "peer"),
    [
        ({"PROXY_FIX_X_FOR": 1, "FORWARDED_ALLOW_IPS": "10.0.0.0/8"}, "198.51.100.99"),
        ({"PROXY_FIX_X_FOR": 2, "FORWARDED_ALLOW_IPS": "127.0.0.1,::1"}, "2001:db8::99"),
        ({"PROXY_FIX_X_FOR": 0, "FORWARDED_ALLOW_IPS": "*"}, "198.51.100.99"),
    ],
)
def test_a_peer_that_is_no_proxy_is_its_own_client(believed, config, peer):
    assert believed(config, peer, "203.0.113.7, 104.16.0.1") == peer


@pytest.mark.parametrize(("hops", "wrapped"), [(0, False), (1, True), (2, True)])
def test_the_factory_wraps_the_wsgi_app_only_when_proxies_are_configured(settings, hops, wrapped):
    application = create_app({**settings, "PROXY_FIX_X_FOR": hops})

    assert isinstance(application.wsgi_app, ProxiedWhenTrusted) == wrapped
    with application.app_context():
        db.engine.dispose()


@pytest.mark.parametrize(
    ("allowed", "networks"),
    [
        ("*", None),
        ("127.0.0.1, ::1", ["127.0.0.1/32", "::1/128"]),
        ("10.0.0.0/8,,192.168.1.20", ["10.0.0.0/8", "192.168.1.20/32"]),
    ],
)
def test_trusted_proxies_parses_addresses_and_networks(allowed, networks):
    parsed = trusted_proxies(allowed)

    assert (None if parsed is None else [str(network) for network in parsed]) == networks


def test_trusted_proxies_lives_in_the_middleware_module_only():
    assert not hasattr(kasparro, "trusted_proxies")
    assert not hasattr(kasparro, "trust_forwarded_for")
