"""What wraps every request: the client's address behind trusted proxies.

Werkzeug's ``ProxyFix`` reads the client's address from ``X-Forwarded-For``, believing only the
last ``PROXY_FIX_X_FOR`` entries: those the proxies wrote, not what the client sent before them.
It does not fit alone: it trusts the header from whichever peer sends it, and has no list of
trusted networks. So it is applied only when the peer itself is a proxy (in
``FORWARDED_ALLOW_IPS``); a client that reaches the app directly keeps its own address.
"""

from collections.abc import Callable, Iterable
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def trusted_proxies(allowed: str) -> list[IPv4Network | IPv6Network] | None:
    """Parse FORWARDED_ALLOW_IPS (addresses or networks, comma-separated); ``None`` means ``*``."""
    entries = [entry.strip() for entry in allowed.split(",") if entry.strip()]
    if "*" in entries:
        return None
    try:
        return [ip_network(entry) for entry in entries]
    except ValueError as exc:
        raise ValueError(f"FORWARDED_ALLOW_IPS must list addresses or networks: {exc}") from None


def trust_forwarded_for(app: Flask) -> None:
    """Take the client address from X-Forwarded-For, written by PROXY_FIX_X_FOR trusted proxies."""
    networks = trusted_proxies(app.config["FORWARDED_ALLOW_IPS"])
    hops = app.config["PROXY_FIX_X_FOR"]
    if hops <= 0:
        return
    app.wsgi_app = ProxiedWhenTrusted(app.wsgi_app, networks, hops)


class ProxiedWhenTrusted:
    """Hand a request to ``ProxyFix`` when its peer is a trusted proxy, else straight to the app."""

    def __init__(
        self, app: WSGIApp, networks: list[IPv4Network | IPv6Network] | None, hops: int
    ) -> None:
        self.direct = app
        self.proxied = ProxyFix(app, x_for=hops)
        self.networks = networks

    def from_trusted_peer(self, environ: dict[str, Any]) -> bool:
        """Tell whether the peer of this request is one of the trusted proxies."""
        if self.networks is None:
            return True
        try:
            peer = ip_address(environ.get("REMOTE_ADDR", ""))
        except ValueError:  # a UNIX socket: only local processes reach it (gunicorn trusts it too)
            return True
        return any(peer in network for network in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        """Serve the request, through ``ProxyFix`` when the peer is trusted."""
        handler = self.proxied if self.from_trusted_peer(environ) else self.direct
        return handler(environ, start_response)
