"""The limits every request is held to before a route reads it: the request line and headers.

gunicorn has limits of its own for the request line, the number of header fields and each
field's size, and refuses past them with an HTML page before the app sees the request.
docker/gunicorn.conf.py sets gunicorn's limits above these, so these bind first and a client is
refused in JSON, with a request id and an access-log line. The request-line and header limits
are gunicorn's defaults, so a client is held to the same bounds as before; the 2048-byte query
string limit is the app's own.
"""

from collections.abc import Iterator, Mapping
from urllib.parse import quote

MAX_REQUEST_LINE = 4094  # bytes of ``METHOD target HTTP/1.1``
MAX_QUERY_STRING = 2048  # bytes after the ``?``
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD_BYTES = 8190  # bytes of ``Name: value`` and its CRLF
_SHOWN_NAME = 100  # characters of a refused field's name quoted back


def request_target(environ: Mapping[str, str]) -> str:
    """Return the request target as the client sent it (rebuilt where the server does not say)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is not None:
        return raw
    path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/;=,")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def header_fields(environ: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """Yield each header field's name and value as the WSGI server handed them over.

    A server joins a repeated field into one, so a repeated field counts once, at its joined size.
    """
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            yield key[5:].replace("_", "-").title(), value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            yield key.replace("_", "-").title(), value


def limit_refusal(environ: Mapping[str, str]) -> tuple[int, str] | None:
    """Return the status and reason to refuse the request with, or ``None`` within every limit."""
    query = environ.get("QUERY_STRING", "").encode("latin-1")  # WSGI strings hold the bytes
    if len(query) > MAX_QUERY_STRING:
        return 414, f"the query string is longer than {MAX_QUERY_STRING} bytes"
    method = environ.get("REQUEST_METHOD", "GET")
    protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
    line = len(method) + len(request_target(environ)) + len(protocol) + 2
    if line > MAX_REQUEST_LINE:
        return 414, f"the request line is longer than {MAX_REQUEST_LINE} bytes"
    try:
        query.decode("utf-8")
    except UnicodeDecodeError as exc:  # Werkzeug would fail reading the arguments
        return 400, f"the query string is not valid UTF-8 at byte {exc.start}"
    fields = 0
    for name, value in header_fields(environ):
        fields += 1
        if len(name) + len(value) + 4 > MAX_HEADER_FIELD_BYTES:  # ": " and CRLF
            shown = name[:_SHOWN_NAME]
            return 431, f"the header field {shown} is longer than {MAX_HEADER_FIELD_BYTES} bytes"
    if fields > MAX_HEADER_FIELDS:
        return 431, f"the request has {fields} header fields; at most {MAX_HEADER_FIELDS} are read"
    return None
