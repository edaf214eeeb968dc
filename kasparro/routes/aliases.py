"""What did not resolve, and the aliases an operator adds to resolve it."""

import math

from flask.views import MethodView
from flask_smorest import Blueprint
from flask_smorest.error_handler import ErrorSchema

from kasparro.access import admin_token
from kasparro.etl.aliases import (
    AliasConflict,
    UnknownAsset,
    add_alias,
    list_aliases,
    unresolved_groups,
)
from kasparro.extensions import AppJSONParser, db
from kasparro.routes.errors import abort_naming
from kasparro.routes.kept_answers import kept_answer
from kasparro.schemas.aliases import (
    AliasAddedSchema,
    AliasListSchema,
    AliasQuerySchema,
    AliasRequestSchema,
    UnresolvedPageSchema,
    UnresolvedQuerySchema,
)

blp = Blueprint("aliases", __name__, description="What did not resolve, and aliases")
# Bodies are decoded by the app's JSON provider, which turns any undecodable body into a 400.
blp.ARGUMENTS_PARSER = AppJSONParser()


@blp.route("/assets/unresolved")
@blp.response(200, UnresolvedPageSchema)
@kept_answer()
@blp.arguments(UnresolvedQuerySchema(), location="query")
def list_unresolved(args):
    """List the observations that did not resolve, by source, name and symbol, most first."""
    return _unresolved(args)


def _unresolved(args) -> dict:
    page, page_size = args["page"], args["page_size"]
    found = unresolved_groups(db.session, args.get("source"), page, page_size)
    return {
        "data": found.groups,
        "pagination": {
            "page": page,
            "page_size": page_size,
            "total": found.total_groups,
            "total_pages": math.ceil(found.total_groups / page_size),
        },
        "unresolved_observations": found.unresolved,
    }


@blp.route("/assets/aliases")
class Aliases(MethodView):
    """The aliases operators added."""

    @blp.response(200, AliasListSchema)
    @kept_answer()
    @blp.arguments(AliasQuerySchema(), location="query")
    def get(self, args):
        """List the aliases, oldest first."""
        return _aliases(args)

    @admin_token.required(disabled="corrections over HTTP are disabled")  # above the body
    @blp.arguments(AliasRequestSchema)
    @blp.response(201, AliasAddedSchema, description="The alias was added")
    @blp.alt_response(200, schema=AliasAddedSchema, description="The same alias was there")
    @blp.alt_response(400, schema=ErrorSchema, description="The body is not valid JSON")
    @blp.alt_response(401, schema=ErrorSchema, description="No bearer token")
    @blp.alt_response(403, schema=ErrorSchema, description="Wrong bearer token")
    @blp.alt_response(404, schema=ErrorSchema, description="No asset has that id")
    @blp.alt_response(409, schema=ErrorSchema, description="The name or symbol means another asset")
    @blp.alt_response(413, schema=ErrorSchema, description="The body is over 64 KiB")
    @blp.alt_response(415, schema=ErrorSchema, description="A body that is not JSON")
    @blp.alt_response(
        503,
        schema=ErrorSchema,
        description="Corrections over HTTP are disabled (no ETL_ADMIN_TOKEN)",
    )
    def post(self, body):
        """Add an alias, and resolve the past observations it matches."""
        kind = "name" if "name" in body else "symbol"
        try:
            added = add_alias(db.session, body["asset_id"], kind, body[kind])
        except UnknownAsset as exc:
            abort_naming(404, "json", "asset_id", str(exc))
        except AliasConflict as exc:
            abort_naming(409, "json", kind, str(exc))
        return added, (201 if added.created else 200)


def _aliases(args) -> dict:
    page = args["page"]
    aliases, more = list_aliases(db.session, args.get("asset"), page, args["page_size"])
    return {"data": aliases, "next_page": page + 1 if more else None}
