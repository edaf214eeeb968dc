"""Request ids, access logs, and a JSON body for every error: no HTML pages, no tracebacks."""

import re
import time
import uuid
from http import HTTPStatus

import structlog
from flask import Flask, g, jsonify, request
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = structlog.get_logger(__name__)
MAX_QUERY_STRING = 2048
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


def error_body(code: int, message: str, **extra):
    """Return a JSON error response in the same shape flask-smorest uses."""
    body = {"code": code, "status": HTTPStatus(code).phrase, "message": message, **extra}
    return jsonify(body), code


def init_error_handling(app: Flask) -> None:
    """Attach the request-id, access-log and error hooks to ``app``."""

    @app.before_request
    def assign_request_id():
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        g.request_started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)

    @app.before_request
    def bound_query_string():
        if len(request.query_string) > MAX_QUERY_STRING:
            return error_body(414, f"the query string is longer than {MAX_QUERY_STRING} bytes")
        return None

    @app.after_request
    def echo_request_id(response):
        response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
        log.info(
            "http.request",
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round((time.perf_counter() - g.get("request_started", 0)) * 1000, 2),
        )
        return response

    @app.teardown_request
    def forget_request_id(exc):
        structlog.contextvars.clear_contextvars()

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
