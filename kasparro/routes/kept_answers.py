"""Kept answers: a GET answer kept until the data it shows changes, keyed by data version and URL.

A GET answer of ``/data``, ``/stats`` and the other read views depends only on its URL and on
what the ETL and retention have committed. Every such commit moves the data version
(``kasparro.etl.versions``) in its own transaction, so an answer computed at one version stays
right for as long as the version stands. Flask-Caching keeps the answers in each process's
memory (``kasparro.extensions.kept``), at most ``RESPONSE_CACHE_ENTRIES`` of them, each for at
most ``RESPONSE_CACHE_SECONDS``: a write made outside this code (by hand, or by an older version
of it) moves no counter, and shows once the answers it changed have expired.

A view is kept with ``@kept_answer()``, under ``@blp.response``: on a miss the view runs and
flask-smorest serialises its value with the response schema as usual, and the JSON text it
sends is kept; on a hit the kept text is sent as it is, a ``Response`` that flask-smorest passes
through, neither rebuilt into objects nor encoded again. Placed above ``@blp.arguments``, a hit
does not read the query's arguments again either. ``kept_value`` keeps a part of an answer the
same way (``/health``'s runs, the dashboard's page).

Reading the version is a database round trip, and it was about half of a kept answer's cost,
so each process reads it at most once every ``VERSION_READ_SECONDS`` (0.1 s) and keys answers by
what it read meanwhile (``DataVersionClock``, one per app). That bounds how long a kept answer
outlives a commit that changed it:
- a commit made by another process (a Celery worker, another gunicorn worker, the CLI) shows
  within ``VERSION_READ_SECONDS``;
- a commit made by this process (an ETL run done in-process) shows at once: ``record_change``
  tells the clock its session carries, the clock counts the commit once it is made, and a read
  that such a commit overlapped is not reused.
"""

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import sqlalchemy as sa
from flask import Flask, Response, after_this_request, current_app, request
from sqlalchemy.orm import Session

from kasparro.etl.versions import VERSION_CLOCK, data_version
from kasparro.extensions import db, kept

VERSION_READ_SECONDS = 0.1
_WATCHED = "kasparro.version_clock.watched"  # session.info: the clock counts this session's commits
_CHANGED = "kasparro.version_clock.changed"  # session.info: its transaction moves the version


class _VersionRead(NamedTuple):
    version: int
    commits: int  # the clock's count of changing commits before the read began
    started: float  # time.monotonic() before the read began


class DataVersionClock:
    """The data version as this process last read it, read again once it may be out of date.

    An app extension (``app.extensions[VERSION_CLOCK]``); each session of the app carries it
    (``session.info[VERSION_CLOCK]``) so that ``record_change`` can tell it of a change.
    """

    def __init__(self) -> None:
        self._last: _VersionRead | None = None
        self._commits = 0  # commits of this app's sessions that moved the data version

    def changing(self, session: Session | sa.orm.scoped_session) -> None:
        """Count ``session``'s commit once it is made: its transaction moves the data version."""
        if isinstance(session, sa.orm.scoped_session):  # db.session: listen to this one only
            session = session()
        info = session.info
        if not info.get(_WATCHED):
            info[_WATCHED] = True
            sa.event.listen(session, "after_commit", self._committed)  # this session's only
        info[_CHANGED] = True

    def _committed(self, session: Session) -> None:
        if session.info.pop(_CHANGED, False):
            self._commits += 1  # compared only for equality: an increment lost to a race moves it

    def current(self) -> int:
        """Return the data version, read again after VERSION_READ_SECONDS or a change here."""
        commits, now = self._commits, time.monotonic()
        last = self._last  # read once: another thread may replace it meanwhile
        if last and last.commits == commits and now - last.started < VERSION_READ_SECONDS:
            return last.version
        version = data_version(db.session)
        self._last = _VersionRead(version, commits, now)
        return version


def init_kept_answers(app: Flask) -> None:
    """Keep answers in this process's memory (none when RESPONSE_CACHE_ENTRIES is 0)."""
    entries = app.config["RESPONSE_CACHE_ENTRIES"]
    kept.init_app(
        app,
        config={
            "CACHE_TYPE": "SimpleCache" if entries > 0 else "NullCache",
            "CACHE_THRESHOLD": entries,
            "CACHE_DEFAULT_TIMEOUT": app.config["RESPONSE_CACHE_SECONDS"],
            "CACHE_NO_NULL_WARNING": True,  # off by choice: RESPONSE_CACHE_ENTRIES is 0
        },
    )
    app.extensions[VERSION_CLOCK] = DataVersionClock()


def _key() -> str:
    # The query string as sent, byte for byte (parameter order included).
    query = request.query_string.decode("latin-1")
    return f"{current_app.extensions[VERSION_CLOCK].current()}:{request.path}?{query}"


def kept_value(compute: Callable[[], Any]) -> Any:
    """Return the value computed for this URL at the current data version, computing it once.

    The version is read before the value, so a value is never older than the version it is
    kept under; one computed across a commit is newer, and is served until the version is
    read again.
    """
    key = _key()
    value = kept.get(key)
    if value is None:
        value = compute()
        kept.set(key, value)
    return value


Meta = Callable[[float], dict[str, Any]]  # the per-request "meta", from when the request began


def kept_answer(meta: Meta | None = None) -> Callable[[Callable], Callable]:
    """Keep the view's 200 answer, as the JSON text sent, for its URL at the current data version.

    Goes under ``@blp.response``, and above ``@blp.arguments``: a kept answer is served before
    the arguments are read, and an answer is kept only once they were read without error. The
    view returns its value without ``meta``; ``meta``, made for each request once the body is
    there, is written in as the last key.
    """

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)  # flask-smorest's documentation of the view comes along
        def serve(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            key = _key()  # the version is read before the answer is computed
            text = kept.get(key)
            if text is not None:
                return _respond(text, meta, started)

            @after_this_request
            def keep(response: Response) -> Response:
                if response.status_code == 200 and response.is_json:
                    text = response.get_data(as_text=True).removesuffix("\n")
                    kept.set(key, text)
                    if meta is not None:
                        response.set_data(_with_meta(text, meta, started))
                return response

            return view(*args, **kwargs)

        return serve

    return decorate


def _respond(text: str, meta: Meta | None, started: float) -> Response:
    body = f"{text}\n" if meta is None else _with_meta(text, meta, started)
    return current_app.response_class(body, mimetype=current_app.json.mimetype)


def _with_meta(text: str, meta: Meta, started: float) -> str:
    made = current_app.json.dumps(meta(started), separators=(",", ":"))
    return f'{text[:-1]},"meta":{made}}}\n'  # a body is never the empty {}
