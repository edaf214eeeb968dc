"""Answers kept until the data they show changes: keyed by the data version and the URL.

A GET answer of ``/data`` or ``/stats`` depends only on its URL and on what the ETL and
retention have committed. Every such commit moves the data version (``kasparro.etl.versions``)
in its own transaction, so a body computed at one version stays right for as long as the
version stands. Flask-Caching keeps the bodies in each process's memory, at most
``RESPONSE_CACHE_ENTRIES`` of them, each for at most ``RESPONSE_CACHE_SECONDS``: a write made
outside this code (by hand, or by an older version of it) moves no counter, and shows once the
answers it changed have expired.

Reading the version is a database round trip, and it was about half of a kept answer's cost,
so each process reads it at most once every ``VERSION_READ_SECONDS`` (0.1 s) and keys answers by
what it read meanwhile. That bounds how long a kept answer outlives a commit that changed it:
- a commit made by another process (a Celery worker, another gunicorn worker, the CLI) shows
  within ``VERSION_READ_SECONDS``;
- a commit made by this process (an ETL run done in-process) shows at once: every session
  commit here makes the next request read the version again, and a read that a commit
  overlapped is not reused.
"""

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import sqlalchemy as sa
from flask import Flask, Response, current_app, request

from kasparro.etl.versions import data_version
from kasparro.extensions import cache, db

VERSION_READ_SECONDS = 0.1
_EXTENSION = "kasparro.data_version"
_commits = 0  # session commits this process has made, through any engine or app


@sa.event.listens_for(sa.orm.Session, "after_commit")
def _count_commit(session: sa.orm.Session) -> None:
    global _commits
    _commits += 1  # compared only for equality: an increment lost to a race still moves it


class _VersionRead(NamedTuple):
    version: int
    commits: int  # _commits before the read began
    started: float  # time.monotonic() before the read began


class DataVersionClock:
    """The data version as this process last read it, read again once it may be out of date."""

    def __init__(self) -> None:
        self._last: _VersionRead | None = None

    def current(self) -> int:
        """Return the data version, read again after VERSION_READ_SECONDS or a commit here."""
        commits, now = _commits, time.monotonic()
        last = self._last  # read once: another thread may replace it meanwhile
        if last and last.commits == commits and now - last.started < VERSION_READ_SECONDS:
            return last.version
        version = data_version(db.session)
        self._last = _VersionRead(version, commits, now)
        return version


def init_response_cache(app: Flask) -> None:
    """Keep answers in this process's memory (none when RESPONSE_CACHE_ENTRIES is 0)."""
    entries = app.config["RESPONSE_CACHE_ENTRIES"]
    cache.init_app(
        app,
        config={
            "CACHE_TYPE": "SimpleCache" if entries > 0 else "NullCache",
            "CACHE_THRESHOLD": entries,
            "CACHE_DEFAULT_TIMEOUT": app.config["RESPONSE_CACHE_SECONDS"],
            "CACHE_NO_NULL_WARNING": True,  # off by choice: RESPONSE_CACHE_ENTRIES is 0
        },
    )
    app.extensions[_EXTENSION] = DataVersionClock()


def _key() -> str:
    # The query string as sent, byte for byte (parameter order included).
    query = request.query_string.decode("latin-1")
    return f"{current_app.extensions[_EXTENSION].current()}:{request.path}?{query}"


def cached_body(compute: Callable[[], Any]) -> Any:
    """Return the value computed for this URL at the current data version, computing it once.

    The version is read before the value, so a value is never older than the version it is
    kept under; one computed across a commit is newer, and is served until the version is
    read again.
    """
    key = _key()
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value)
    return value


Meta = Callable[[float], dict[str, Any]]  # the per-request "meta", from when the request began


def kept_response(compute: Callable[[], dict[str, Any]], meta: Meta | None = None) -> Response:
    """Return the JSON response of the body kept for this URL, and ``meta`` made for this request.

    The body is kept as JSON text: a kept answer is neither rebuilt into objects nor encoded
    again, which was most of its cost. ``meta`` is made once the body is there, and is written
    in as the last key.
    """
    started = time.perf_counter()
    return _respond(cached_body(lambda: _compact(compute())), meta, started)


def kept_first(meta: Meta | None = None) -> Callable[[Callable], Callable]:
    """Serve a kept answer before the view reads its arguments; otherwise run the view.

    An answer is kept only after its URL's arguments were read without error, and under the
    query string byte for byte, so the same URL needs no second reading while it is kept.
    """

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)  # flask-smorest's documentation of the view comes along
        def serve(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            text = cache.get(_key())
            return view(*args, **kwargs) if text is None else _respond(text, meta, started)

        return serve

    return decorate


def _respond(text: str, meta: Meta | None, started: float) -> Response:
    if meta is not None:
        text = f'{text[:-1]},"meta":{_compact(meta(started))}}}'  # a body is never the empty {}
    return current_app.response_class(f"{text}\n", mimetype=current_app.json.mimetype)


def _compact(value: Any) -> str:
    return current_app.json.dumps(value, separators=(",", ":"))
