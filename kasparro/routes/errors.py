"""A JSON body for every error: no HTML pages, no tracebacks."""

from http import HTTPStatus
from typing import NoReturn

import structlog
from flask import Flask, g, jsonify, request
from flask_smorest import abort
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = structlog.get_logger(__name__)


def error_body(code: int, message: str, **extra):
    """Return a JSON error response in the same shape flask-smorest uses."""
    body = {"code": code, "status": HTTPStatus(code).phrase, "message": message, **extra}
    return jsonify(body), code


def abort_naming(status: int, location: str, field: str, message: str) -> NoReturn:
    """Abort with ``message``, naming the ``field`` of the request's ``location`` that is wrong."""
    abort(status, message=message, errors={location: {field: [message]}})


def init_error_handlers(app: Flask) -> None:
    """Answer every error ``app`` raises with a JSON body."""

    @app.errorhandler(405)
    def method_not_allowed(exc):
        body, status = error_body(405, f"{request.method} is not allowed here")
        body.headers["Allow"] = ", ".join(sorted(exc.valid_methods or ()))
        return body, status

    @app.errorhandler(429)
    def too_many_requests(exc):
        return error_body(429, f"too many requests ({exc.description}); retry after Retry-After")

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeoutError)
    def database_unavailable(exc):
        log.error("http.database_unavailable", error=type(exc).__name__)
        return error_body(503, "the database is unavailable; try again shortly")

    @app.errorhandler(Exception)
    def unexpected_error(exc):
        log.exception("http.unhandled_error")
        return error_body(500, f"internal error; quote request id {g.get('request_id')}")
