"""Extension objects, created unbound and bound to the app in create_app."""

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base shared by every model."""


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = Api()


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
