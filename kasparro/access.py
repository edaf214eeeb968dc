"""Who may use what the API keeps for operators: a bearer token, and the networks listed.

Bearer tokens go through Flask-HTTPAuth (``HTTPTokenAuth``), one object per setting that holds a
token: ``ETL_ADMIN_TOKEN`` guards run control and corrections, ``METRICS_TOKEN`` the metrics.
The answers are the API's: 401 with ``WWW-Authenticate: Bearer`` and a JSON body when no bearer
token is sent, 403 when another token is sent (Flask-HTTPAuth's role check: any token names a
caller, only the setting's is the operator), compared in constant time. Two things stay here
rather than in the library: the token is the whole text after ``Bearer``, as sent (Werkzeug's
parser reads a token holding ``=`` as parameters, and would refuse it), and a route guarded by
a setting that is not set answers 503 with its own message, before any token is looked at.

``GET /metrics`` tells how the service runs (request rates, sources, failures): the operator can
keep it to Prometheus with ``METRICS_TOKEN``, ``METRICS_ALLOWED_NETWORKS``, or both.
"""

import functools
import hmac
from collections.abc import Callable

from flask import current_app, request
from flask_httpauth import HTTPTokenAuth
from flask_smorest import abort
from werkzeug.datastructures import Authorization

from kasparro.setting import allowed_networks, client_in

OPERATOR = "operator"  # the role of a caller who sent the setting's token
STRANGER = "stranger"  # one who sent another


class BearerToken(HTTPTokenAuth):
    """The bearer token of one setting, checked before the view it guards reads anything."""

    def __init__(self, setting: str):
        super().__init__(scheme="Bearer", realm="kasparro")
        self.setting = setting
        self.verify_token(self.caller)
        self.get_user_roles(lambda caller: caller)
        self.error_handler(self.refuse)

    def get_auth(self) -> Authorization | None:
        """Return the bearer token sent, the whole text after the scheme; None without one."""
        scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not supplied.strip():
            return None
        return Authorization("bearer", token=supplied.strip())

    def caller(self, token: str) -> str:
        """Return who sent ``token``: the operator when it is the setting's, in constant time."""
        expected = current_app.config[self.setting]
        return OPERATOR if hmac.compare_digest(token.encode(), expected.encode()) else STRANGER

    def refuse(self, status: int) -> None:
        """Abort with the API's JSON error: 401 without a bearer token, 403 with another."""
        if status == 401:
            abort(
                401,
                message=f"send Authorization: Bearer <{self.setting}>",
                headers={"WWW-Authenticate": self.authenticate_header()},
            )
        abort(403, message="the bearer token is not valid")

    def check(self) -> None:
        """Abort unless the request carries the setting's token."""
        self.login_required(role=OPERATOR)(lambda: None)()

    def required(self, disabled: str) -> Callable:
        """Guard a view: 503 ``disabled`` when the setting is not set, then the token.

        Put it above the body parsing: a caller without the token learns nothing of the schema.
        """

        def guard(view: Callable) -> Callable:
            checked = self.login_required(role=OPERATOR)(view)

            @functools.wraps(view)
            def guarded(*args, **kwargs):
                if not current_app.config[self.setting]:
                    abort(503, message=f"{disabled}: {self.setting} is not set")
                return checked(*args, **kwargs)

            return guarded

        return guard


admin_token = BearerToken("ETL_ADMIN_TOKEN")
metrics_token = BearerToken("METRICS_TOKEN")


def require_metrics_access() -> None:
    """Abort unless the client is in METRICS_ALLOWED_NETWORKS and sends METRICS_TOKEN, if set.

    The client is ``request.remote_addr``: the peer, or the address the trusted proxies wrote
    into X-Forwarded-For (``kasparro.middleware.trust_forwarded_for``), never one the client
    wrote itself.
    """
    listed = current_app.config["METRICS_ALLOWED_NETWORKS"]
    if listed and not client_in(request.remote_addr, allowed_networks(listed)):
        abort(403, message="GET /metrics answers only the clients of METRICS_ALLOWED_NETWORKS")
    if current_app.config["METRICS_TOKEN"]:
        metrics_token.check()
