"""The errors any request can get, declared once for the whole OpenAPI document.

Every route holds a request to the request limits (kasparro/routes/request_limits.py) before it
reads it, every rate-limited blueprint answers 429, and every route that reads the database
answers 503 when it is unreachable (kasparro/routes/errors.py). Rather than each route repeating
those answers, an apispec plugin adds them to every operation as flask-smorest documents it.
"""

from collections.abc import Iterable

from apispec import APISpec, BasePlugin

from kasparro.routes.request_limits import (
    MAX_HEADER_FIELD_BYTES,
    MAX_HEADER_FIELDS,
    MAX_QUERY_STRING,
    MAX_REQUEST_LINE,
)
from kasparro.schemas.common import RETRY_AFTER

ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
NOT_UTF8 = "the query string is not valid UTF-8"
# One meaning wherever they appear: these replace what a route says of the same status.
EVERY_OPERATION = {
    "414": f"The request line is over {MAX_REQUEST_LINE} bytes, "
    f"or the query string over {MAX_QUERY_STRING}",
    "431": f"More than {MAX_HEADER_FIELDS} header fields, "
    f"or one over {MAX_HEADER_FIELD_BYTES} bytes",
}
DATABASE_DOWN = "the database is unreachable"
# Blueprints none of whose routes reads the database: /metrics serves the processes' counters.
READS_NO_DATABASE = frozenset({"metrics"})
RATE_LIMITED = {"description": "Rate limited", "headers": RETRY_AFTER, "content": ERROR_CONTENT}


def error_response(description: str) -> dict:
    """Return an OpenAPI response with ``description`` and the JSON error body."""
    return {"description": description, "content": ERROR_CONTENT}


def add_database_down(responses: dict) -> None:
    """Declare the 503 of an unreachable database; a route's own 503 gets it as one more cause."""
    own = responses.get("503", {}).get("description")
    if own is None:
        responses["503"] = error_response(DATABASE_DOWN[0].upper() + DATABASE_DOWN[1:])
    elif DATABASE_DOWN not in own.lower():  # /health's own 503 says it, with its own body
        responses["503"]["description"] = f"{own}, or {DATABASE_DOWN}"


class DocumentedErrors(BasePlugin):
    """Add to each operation the request limits' 400, 414, 431; 429 and 503 where they apply."""

    def __init__(self, rate_limited: Iterable[str]):
        self.rate_limited = frozenset(rate_limited)

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        """Declare the errors every request can get on each of ``operations``."""
        rule = kwargs.get("rule")
        blueprint = rule.endpoint.partition(".")[0] if rule is not None else None
        for operation in (operations or {}).values():
            # Routes give their statuses as numbers, apispec writes them as text later.
            responses = {
                str(code): answer for code, answer in operation.get("responses", {}).items()
            }
            operation["responses"] = responses
            if blueprint not in READS_NO_DATABASE:
                add_database_down(responses)
            for status, description in EVERY_OPERATION.items():
                responses[status] = error_response(description)
            own = responses.get("400", {}).get("description")
            if own is None:
                responses["400"] = error_response(NOT_UTF8[0].upper() + NOT_UTF8[1:])
            elif NOT_UTF8 not in own:  # a route's own 400, a bad cursor say: one more cause
                responses["400"]["description"] = f"{own}, or {NOT_UTF8}"
            if blueprint in self.rate_limited:
                responses.setdefault("429", RATE_LIMITED)


def document_errors(spec: APISpec, rate_limited: Iterable[str]) -> None:
    """Declare the errors of every operation ``spec`` documents from now on.

    ``rate_limited`` names the blueprints the request limiter covers.
    """
    plugin = DocumentedErrors(rate_limited)
    plugin.init_spec(spec)
    spec.plugins.append(plugin)
