"""Extension objects, created unbound and bound to the app in create_app.

Also the one way request bodies are decoded: the app's JSON provider, which webargs' parser uses
too, so that no body, however deep or long its numbers, ends as a 500; and a body that is not
JSON is refused, never read as "no body".
"""

import json
from typing import Any

from flask import Flask, current_app
from flask.json.provider import DefaultJSONProvider
from flask_caching import Cache
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_smorest import Api, abort
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from kasparro.etl.versions import VERSION_CLOCK
from kasparro.models import Base


class BodyJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider; a body it cannot decode is always a ``JSONDecodeError``.

    The standard decoder raises ``RecursionError`` for deeply nested documents and a bare
    ``ValueError`` for numbers past ``int``'s digit limit; callers that turn decoding errors into
    400 answers expect ``JSONDecodeError``, so both become one.
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Decode ``s``; a document too deep or with an unreadable number is a decode error."""
        try:
            return super().loads(s, **kwargs)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise
        except (RecursionError, ValueError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            doc = s if isinstance(s, str) else s.decode("utf-8", "replace")
            raise json.JSONDecodeError(f"unreadable JSON: {reason}", doc, 0) from None


NOT_JSON = "the body must be JSON, sent with Content-Type: application/json"


class AppJSONParser(FlaskParser):
    """webargs' Flask parser: JSON bodies decoded by the app's provider, other bodies refused.

    webargs reads a body of another type as no body at all, so a form (``curl -d`` without a
    header) meant the defaults: every source run. Only an empty body may mean that; any other
    gets 415.
    """

    def _raw_load_json(self, req) -> Any:
        if is_json_request(req):
            return current_app.json.loads(req.get_data(cache=True))
        if req.content_length or req.get_data(cache=True):
            abort(415, message=NOT_JSON)
        return core.missing


class AppSession(Session):
    """Flask-SQLAlchemy's session, carrying its app's data version clock to ``record_change``."""

    def __init__(self, db: SQLAlchemy, **kwargs: Any) -> None:
        super().__init__(db, **kwargs)
        clock = current_app.extensions.get(VERSION_CLOCK)  # sessions live in an app context
        if clock is not None:
            self.info[VERSION_CLOCK] = clock


db = SQLAlchemy(model_class=Base, session_options={"class_": AppSession})
migrate = Migrate()
api = Api()
kept = Cache()  # the kept answers (kasparro.routes.kept_answers)


def _public_rate_limit() -> str:
    return current_app.config["PUBLIC_RATE_LIMIT"]


def _no_public_rate_limit() -> bool:
    return not current_app.config["PUBLIC_RATE_LIMIT"]


def init_limiter(app: Flask, public_blueprints) -> Limiter:
    """Give ``app`` a request limiter of its own, limiting each client on the public blueprints.

    One limiter per app: the limiter keeps its storage and its fallback state, so a shared one
    would let one app's settings leak into the next.
    """
    limiter = Limiter(key_func=get_remote_address)
    limiter.init_app(app)
    for blueprint in public_blueprints:
        limiter.limit(_public_rate_limit, exempt_when=_no_public_rate_limit)(blueprint)
    return limiter
