"""What wraps every request: the client's address behind trusted proxies, and security headers.

Proxies. Werkzeug's ``ProxyFix`` reads the client's address from ``X-Forwarded-For``, believing
only the last ``PROXY_FIX_X_FOR`` entries: those the proxies wrote, not what the client sent
before them. It does not fit alone: it trusts the header from whichever peer sends it, and has
no list of trusted networks. So it is applied only when the peer itself is a proxy (in
``FORWARDED_ALLOW_IPS``); a client that reaches the app directly keeps its own address.

Security headers. Flask-Talisman sets them on every response, with these choices:

- ``Content-Security-Policy``: ``SELF_ONLY`` everywhere (the dashboard, the JSON answers,
  ``/metrics``): every page loads only the vendored assets of ``kasparro/static/``, and no
  inline script or style. ``/docs`` and ``/redoc`` are flask-smorest's own templates, which
  carry no nonce, so each gets only the exception it needs: Swagger UI's page starts it with
  an inline script (``script-src 'unsafe-inline'``); ReDoc writes its styles into ``<style>``
  elements (styled-components, ``style-src 'unsafe-inline'``) and runs its search in a worker
  made from a ``blob:`` URL. Both pages show only the app's own OpenAPI document. The policy
  also stops the one thing ReDoc fetches from elsewhere: the Redocly logo in its side bar.
- ``force_https=False``: a laptop run (``flask run``, the embedded mode, docker compose) is
  plain HTTP with nothing serving HTTPS, so a redirect would lead nowhere. Deployed, TLS ends
  at the proxy in front (Render's), which redirects to HTTPS itself.
- ``Strict-Transport-Security`` goes only on answers to HTTPS requests (Talisman's rule), and
  without ``includeSubDomains``: other hosts of the operator's domain are none of the app's
  business.
- ``X-Frame-Options: DENY`` says what ``frame-ancestors 'none'`` says, to older browsers.
- ``session_cookie_secure=False``: the app sets no cookie; Talisman would otherwise write
  ``SESSION_COOKIE_SECURE`` into the config on every request.

Where Talisman does not fit as it is: it works every header out again for each response (the
view's options looked up four times, the policy parsed again), about 35 µs a request in
process (measured through the test client on ``/stats``), more than the read path can spare.
``SecurityHeaders`` keeps Talisman's options and rules, and works the headers out once per
endpoint and scheme.
"""

from collections.abc import Callable, Iterable
from functools import wraps
from ipaddress import ip_address
from types import SimpleNamespace
from typing import Any

from flask import Flask, Response, request
from flask_talisman import DENY, Talisman
from werkzeug.datastructures import Headers
from werkzeug.middleware.proxy_fix import ProxyFix

from kasparro.setting import Networks, allowed_networks, client_in

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Scripts, styles, images and requests from this origin only; no inline script or style.
SELF_ONLY = {
    "default-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
# flask-smorest's documentation pages (endpoint: policy), each with what its page needs.
DOCS_PAGES = {
    "api-docs.openapi_swagger_ui": {**SELF_ONLY, "script-src": "'self' 'unsafe-inline'"},
    "api-docs.openapi_redoc": {
        **SELF_ONLY,
        "style-src": "'self' 'unsafe-inline'",
        "worker-src": "'self' blob:",
    },
}


def trusted_proxies(allowed: str) -> Networks | None:
    """Parse FORWARDED_ALLOW_IPS (addresses or networks, comma-separated); ``None`` means ``*``."""
    if "*" in (entry.strip() for entry in allowed.split(",")):
        return None
    try:
        return allowed_networks(allowed)
    except ValueError as exc:
        raise ValueError(f"FORWARDED_ALLOW_IPS {exc}") from None


def trust_forwarded_for(app: Flask) -> None:
    """Take the client address from X-Forwarded-For, written by PROXY_FIX_X_FOR trusted proxies."""
    networks = trusted_proxies(app.config["FORWARDED_ALLOW_IPS"])
    hops = app.config["PROXY_FIX_X_FOR"]
    if hops <= 0:
        return
    app.wsgi_app = ProxiedWhenTrusted(app.wsgi_app, networks, hops)


class ProxiedWhenTrusted:
    """Hand a request to ``ProxyFix`` when its peer is a trusted proxy, else straight to the app."""

    def __init__(self, app: WSGIApp, networks: Networks | None, hops: int) -> None:
        self.direct = app
        self.proxied = ProxyFix(app, x_for=hops)
        self.networks = networks

    def from_trusted_peer(self, environ: dict[str, Any]) -> bool:
        """Tell whether the peer of this request is one of the trusted proxies."""
        if self.networks is None:
            return True
        peer = environ.get("REMOTE_ADDR", "")
        try:
            ip_address(peer)
        except ValueError:  # a UNIX socket: only local processes reach it (gunicorn trusts it too)
            return True
        return client_in(peer, self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        """Serve the request, through ``ProxyFix`` when the peer is trusted."""
        handler = self.proxied if self.from_trusted_peer(environ) else self.direct
        return handler(environ, start_response)


class SecurityHeaders(Talisman):
    """Talisman, with each endpoint's headers worked out once rather than for every response."""

    def init_app(self, app: Flask, **options: Any) -> None:
        """Apply Talisman's ``options`` to ``app``, with nothing worked out yet."""
        self.worked_out: dict[tuple[str | None, bool], list[tuple[str, str]]] = {}
        super().init_app(app, **options)

    def _set_response_headers(self, response: Response) -> Response:
        """Set the headers Talisman sets, worked out on the endpoint's first response."""
        secure = request.is_secure or request.headers.get("X-Forwarded-Proto") == "https"
        key = (request.endpoint, secure)
        headers = self.worked_out.get(key)
        if headers is None or getattr(request, "csp_nonce", None):
            worked = Headers()
            super()._set_response_headers(SimpleNamespace(headers=worked))
            headers = list(worked.items())
            if not getattr(request, "csp_nonce", None):  # a nonce is new for every request
                self.worked_out[key] = headers
        response.headers.update(headers)
        return response


def send_security_headers(app: Flask) -> None:
    """Send Talisman's security headers on every response, with each page's own policy."""
    talisman = SecurityHeaders(
        app,
        force_https=False,
        frame_options=DENY,
        strict_transport_security_include_subdomains=False,
        content_security_policy=SELF_ONLY,
        session_cookie_secure=False,
    )
    app.extensions["talisman"] = talisman
    for endpoint, policy in DOCS_PAGES.items():
        if endpoint in app.view_functions:
            page = with_options(app.view_functions[endpoint])
            app.view_functions[endpoint] = talisman(content_security_policy=policy)(page)


def with_options(view: Callable[..., Any]) -> Callable[..., Any]:
    """Return a function serving as ``view`` that can carry Talisman's options for its page.

    flask-smorest's documentation views are bound methods, which take no attributes.
    """

    @wraps(view)
    def page(**kwargs: Any) -> Any:
        return view(**kwargs)

    return page
