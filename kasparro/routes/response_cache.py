"""Answers kept until the data they show changes: keyed by the data version and the URL.

A GET answer of ``/data`` or ``/stats`` depends only on its URL and on what the ETL and
retention have committed. Every such commit moves the data version (``kasparro.etl.versions``)
in its own transaction, so a body computed at one version stays right for as long as the
version stands: a repeated request costs one small query instead of the page's queries, ORM
objects and serialisation. Flask-Caching keeps the bodies in each process's memory, at most
``RESPONSE_CACHE_ENTRIES`` of them, each for at most ``RESPONSE_CACHE_SECONDS``: a write made
outside this code (by hand, or by an older version of it) moves no counter, and shows once the
answers it changed have expired.
"""

from collections.abc import Callable
from typing import Any

from flask import request

from kasparro.etl.versions import data_version
from kasparro.extensions import cache, db


def cached_body(compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Return the body computed for this URL at the current data version, computing it once.

    The version is read before the body, so a body is never older than the version it is
    kept under; one computed across a commit is newer, and is simply not asked for again.
    """
    # The query string as sent, byte for byte (parameter order included).
    query = request.query_string.decode("latin-1")
    key = f"{data_version(db.session)}:{request.path}?{query}"
    body = cache.get(key)
    if body is None:
        body = compute()
        cache.set(key, body)
    return body
