"""Who may read what the API keeps for operators: a bearer token, and the networks listed.

``GET /metrics`` tells how the service runs (request rates, sources, failures): the operator can
keep it to Prometheus with ``METRICS_TOKEN``, ``METRICS_ALLOWED_NETWORKS``, or both.
"""

import hmac
from ipaddress import ip_address

from flask import current_app, request
from flask_smorest import abort

from kasparro.setting import Networks, allowed_networks


def client_in(address: str | None, networks: Networks) -> bool:
    """Return whether the client ``address`` lies in one of ``networks``; unknown: it does not."""
    try:
        client = ip_address(address or "")
    except ValueError:
        return False
    if client.version == 6 and client.ipv4_mapped is not None:  # IPv4 on a dual-stack socket
        client = client.ipv4_mapped
    return any(client in network for network in networks)


def require_bearer(expected: str, setting: str) -> None:
    """Abort unless the request carries ``Authorization: Bearer <expected>`` (named ``setting``)."""
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not supplied.strip():
        abort(
            401,
            message=f"send Authorization: Bearer <{setting}>",
            headers={"WWW-Authenticate": 'Bearer realm="kasparro"'},
        )
    if not hmac.compare_digest(supplied.strip().encode(), expected.encode()):
        abort(403, message="the bearer token is not valid")


def require_metrics_access() -> None:
    """Abort unless the client is in METRICS_ALLOWED_NETWORKS and sends METRICS_TOKEN, if set.

    The client is ``request.remote_addr``: the peer, or the address the trusted proxies wrote
    into X-Forwarded-For (``kasparro.trust_forwarded_for``), never one the client wrote itself.
    """
    listed = current_app.config["METRICS_ALLOWED_NETWORKS"]
    if listed and not client_in(request.remote_addr, allowed_networks(listed)):
        abort(403, message="GET /metrics answers only the clients of METRICS_ALLOWED_NETWORKS")
    token = current_app.config["METRICS_TOKEN"]
    if token:
        require_bearer(token, "METRICS_TOKEN")
