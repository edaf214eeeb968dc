"""Opaque cursors: URL-safe base64 of compact JSON, checked like query arguments when read back."""

import base64
import binascii
import json
from typing import Any

from marshmallow import Schema, ValidationError

MAX_ID = 2**63 - 1


class InvalidCursor(ValueError):
    """A cursor that this server did not issue."""


NOT_ISSUED = "cursor is not one this server issued"


def pack_cursor(fields: dict[str, Any]) -> str:
    """Return ``fields`` as an opaque cursor: URL-safe base64 of their compact JSON."""
    text = json.dumps(fields, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def unpack_cursor(cursor: str, contents: Schema, message: str = NOT_ISSUED) -> dict[str, Any]:
    """Return a cursor's fields as ``contents`` loads them; InvalidCursor when either fails.

    A client can forge any JSON in a cursor: ``contents`` checks it with the fields that check
    query arguments, so what reaches a query is what this server could have issued.
    """
    try:
        fields = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return contents.load(fields)
    except (binascii.Error, ValueError, ValidationError, RecursionError):
        raise InvalidCursor(message) from None
