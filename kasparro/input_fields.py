"""Fields that check what a client sends: query arguments, bodies, and a cursor's contents.

A cursor is opaque only by convention: it is JSON a client can rewrite. Its contents are checked
with the same fields as the query arguments, so that whatever it holds is refused as a 400, not
sent on to the database (where a NUL or a lone surrogate, for one, fails as a 500).
"""

import re
from datetime import UTC

from marshmallow import ValidationError, fields, validate

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(value: str) -> None:
    """Refuse text a database cannot store: a NUL, or a lone surrogate (no UTF-8 for it)."""
    if "\x00" in value:
        raise ValidationError("must not contain a NUL character")
    if _LONE_SURROGATE.search(value):
        raise ValidationError("must not contain a lone surrogate")


class Text(fields.String):
    """A string argument of 1 to ``max_length`` characters that a database can store."""

    def __init__(self, *, max_length: int, **kwargs):
        super().__init__(validate=[validate.Length(min=1, max=max_length), storable_text], **kwargs)


class AwareDateTime(fields.DateTime):
    """An ISO 8601 datetime; one without a zone is taken as UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and "\x00" in value:
            # CPython's fromisoformat takes a trailing NUL for the end of the text.
            raise ValidationError("must not contain a NUL character")
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except OverflowError:
            raise ValidationError("datetime out of range") from None


class WholeNumber(fields.Integer):
    """A JSON integer from ``low`` to ``high``: not a boolean, a fraction or a numeric string."""

    def __init__(self, low: int, high: int, **kwargs):
        super().__init__(strict=True, validate=validate.Range(min=low, max=high), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not int:
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)
