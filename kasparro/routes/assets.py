"""``GET /assets``, ``GET /assets/<id>`` and ``GET /assets/<id>/history``."""

from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema

from kasparro.extensions import db
from kasparro.read.assets import asset_detail, list_assets
from kasparro.read.cursors import InvalidCursor
from kasparro.read.history import asset_history
from kasparro.routes.errors import abort_naming
from kasparro.routes.kept_answers import kept_answer
from kasparro.schemas.assets import (
    AssetDetailSchema,
    AssetListSchema,
    AssetsQuerySchema,
    HistoryQuerySchema,
    HistorySchema,
)

blp = Blueprint(
    "assets", __name__, description="Assets: latest values, consensus, history and corrections"
)

NO_SUCH_ASSET = {"schema": ErrorSchema, "description": "No asset has this id"}


@blp.route("/assets")
@blp.response(200, AssetListSchema)
@kept_answer()
@blp.arguments(AssetsQuerySchema(), location="query")  # one schema, not one per request
def get_assets(args):
    """List assets with their consensus price, 24 h change, spread and market cap."""
    return list_assets(db.session, **args)


@blp.route("/assets/<asset_id>")
@blp.response(200, AssetDetailSchema)
@kept_answer()
@blp.alt_response(404, **NO_SUCH_ASSET)
def get_asset(asset_id):
    """Show an asset across sources: newest values, consensus, reports and names."""
    return _found(asset_detail(db.session, asset_id))


@blp.route("/assets/<asset_id>/history")
@blp.response(200, HistorySchema)
@kept_answer()
@blp.arguments(HistoryQuerySchema(), location="query")
@blp.alt_response(400, schema=ErrorSchema, description="The cursor is not valid")
@blp.alt_response(404, **NO_SUCH_ASSET)
def get_asset_history(args, asset_id):
    """Show an asset's open, high, low and close per 5m, 1h or 1d bucket, paged by cursor."""
    return _history(asset_id, args)


def _found(body: dict | None) -> dict:
    if body is None:
        abort(404, message="no asset has this id")
    return body


def _history(asset_id: str, args: dict) -> dict:
    try:
        return _found(asset_history(db.session, asset_id, **args))
    except InvalidCursor as exc:
        abort_naming(400, "query", "cursor", str(exc))
