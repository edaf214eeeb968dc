"""Schemas of corrections: what did not resolve, and aliases (kasparro/routes/aliases.py)."""

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from kasparro.etl.assets import alias_text, alias_too_long
from kasparro.input_fields import Text
from kasparro.models import Asset
from kasparro.schemas.common import SOURCE_NAMES

MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 100
MAX_ASSET_LENGTH = 200


def page_fields(default_size: int) -> dict[str, fields.Integer]:
    """Return the ``page`` and ``page_size`` arguments; a page holds ``default_size`` rows."""
    return {
        "page": fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE)),
        "page_size": fields.Integer(
            load_default=default_size, validate=validate.Range(min=1, max=MAX_PAGE_SIZE)
        ),
    }


class UnresolvedQuerySchema(Schema.from_dict(page_fields(20))):
    """Query arguments of ``GET /assets/unresolved``."""

    source = fields.String(validate=validate.OneOf(SOURCE_NAMES))


class UnresolvedGroupSchema(Schema):
    """Observations of one source that did not resolve, under one name and symbol."""

    source = fields.String(required=True)
    name = fields.String(allow_none=True, required=True)
    symbol = fields.String(allow_none=True, required=True)
    observations = fields.Integer(required=True, metadata={"description": "how many"})
    latest = fields.DateTime(required=True, metadata={"description": "the newest one's time"})


class GroupPaginationSchema(Schema):
    """Where this page of groups sits."""

    page = fields.Integer(required=True)
    page_size = fields.Integer(required=True)
    total = fields.Integer(required=True, metadata={"description": "groups, exactly"})
    total_pages = fields.Integer(required=True)


class UnresolvedPageSchema(Schema):
    """A page of ``GET /assets/unresolved``: the most frequent groups first."""

    data = fields.List(fields.Nested(UnresolvedGroupSchema), required=True)
    pagination = fields.Nested(GroupPaginationSchema, required=True)
    unresolved_observations = fields.Integer(
        required=True,
        metadata={"description": "observations without an asset, in every group of the filter"},
    )


class AliasQuerySchema(Schema.from_dict(page_fields(50))):
    """Query arguments of ``GET /assets/aliases``."""

    asset = Text(max_length=MAX_ASSET_LENGTH, metadata={"description": "only this asset's aliases"})

    @post_load
    def normalise(self, data, **kwargs):
        """Compare asset ids in lower case, as they are stored."""
        if "asset" in data:
            data["asset"] = data["asset"].strip().lower()
        return data


class AliasSchema(Schema):
    """A name or symbol an operator maps to an asset."""

    id = fields.Integer(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(("name", "symbol")))
    alias = fields.String(required=True, metadata={"description": "stripped, lower-cased"})
    asset_id = fields.String(required=True)
    created_at = fields.DateTime(required=True)


class AliasListSchema(Schema):
    """A page of aliases, oldest first."""

    data = fields.List(fields.Nested(AliasSchema), required=True)
    next_page = fields.Integer(
        allow_none=True, required=True, metadata={"description": "null on the last page"}
    )


class AliasRequestSchema(Schema):
    """Body of ``POST /assets/aliases``: an asset, and the name or the symbol that means it."""

    asset_id = Text(required=True, max_length=Asset.id.type.length)
    name = Text(max_length=Asset.name.type.length, metadata={"description": "a coin's name"})
    symbol = Text(max_length=Asset.symbol.type.length, metadata={"description": "a ticker"})

    @validates_schema
    def check_one_alias(self, data, **kwargs):
        """Require exactly one of name and symbol, with something besides spaces."""
        given = [kind for kind in ("name", "symbol") if kind in data]
        if len(given) != 1:
            raise ValidationError("give exactly one of name and symbol", "_schema")
        if not alias_text(data[given[0]]):
            raise ValidationError("must not be blank", given[0])
        if too_long := alias_too_long(data[given[0]]):
            raise ValidationError(f"is {too_long}", given[0])


class AliasAddedSchema(AliasSchema):
    """The alias as stored, and what adding it did."""

    created = fields.Boolean(
        required=True, metadata={"description": "false when the same alias was there already"}
    )
    resolved = fields.Integer(
        required=True, metadata={"description": "past observations it resolved now"}
    )
