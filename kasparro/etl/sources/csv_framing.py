"""Framing CSV records on bytes: where a record ends, its text, its fields and its hashes.

Records are framed here, on bytes, rather than by the csv module, because framing decides what
may be held in memory and what waits: a record is one line, or several while a quoted field is
open, and both its bytes and its lines are bounded.
"""

import codecs
import csv
import hashlib
import re
from dataclasses import dataclass

from kasparro.etl.errors import SourceError
from kasparro.etl.parsing import InvalidValue, check_text

MAX_RECORD_LINES = 100  # a quoted field spanning more lines than this is a stray quote
READ_CHUNK = 64 * 1024  # what an over-long line or a fingerprinted prefix is read in
OPEN_QUOTE = "a quoted field is still open at the end of the file"
NO_LINE_END = "the last line has no line ending yet"


_FIELD_END = re.compile(rb"[,\r\n]")


def ends_in_quotes(data: bytes, inside: bool = False) -> bool:
    """Return whether ``data`` ends inside a quoted field, as the csv module would read it.

    A quote opens a quoted field only where a field starts; elsewhere it is an ordinary
    character (``Coin 5" A``). Inside a quoted field, ``""`` is a quote and ``"`` closes it.
    """
    if b'"' not in data:  # most lines: nothing opens or closes
        return inside
    at, field_start = 0, not inside
    while at < len(data):
        if inside:
            close = data.find(b'"', at)
            if close < 0:
                return True
            if data[close + 1 : close + 2] == b'"':
                at = close + 2
                continue
            inside, at, field_start = False, close + 1, False
        elif field_start and data[at : at + 1] == b'"':
            inside, at = True, at + 1
        else:
            end = _FIELD_END.search(data, at)
            if end is None:
                return False
            at, field_start = end.end(), True
    return inside


def decode_record(body: bytes, encoding: str) -> str:
    """Return a record's text; raise InvalidValue saying why no database could hold it as given."""
    if (at := body.find(b"\x00")) >= 0:
        raise InvalidValue(f"contains a NUL byte at byte {at}")
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InvalidValue(f"not valid {encoding}: {exc.reason} at byte {exc.start}") from None
    try:
        check_text("the row", text, len(text))  # what some encodings decode to
    except InvalidValue as exc:
        raise InvalidValue(f"decoded as {encoding}, {exc}") from None
    return text


def split_row(text: str) -> list[str] | None:
    """Split one CSV record into fields; None when it is not valid CSV."""
    try:
        return next(csv.reader([text], strict=False), [])
    except csv.Error:
        return None


def content_hash(body: bytes) -> str:
    """Return the hash that identifies a record's bytes, line ending excluded."""
    return hashlib.sha256(body.rstrip(b"\r\n")).hexdigest()


class RecordHash:
    """``content_hash`` of a record fed in pieces: trailing line-end bytes are held back."""

    def __init__(self):
        self._hash = hashlib.sha256()
        self._held = b""

    def update(self, piece: bytes) -> None:
        """Add the next bytes of the record."""
        body = piece.rstrip(b"\r\n")
        if not body:  # only line-end bytes so far: they count if more text follows
            self._held += piece
            return
        self._hash.update(self._held)
        self._hash.update(body)
        self._held = piece[len(body) :]

    def hexdigest(self) -> str:
        """Return the hash of everything fed so far, without the trailing line ending."""
        return self._hash.hexdigest()


def ascii_compatible_encoding(name: str, setting: str) -> str:
    """Return the codec name of ``name``; it must frame lines and fields as ASCII does."""
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise SourceError(f"{setting}={name!r} is not an encoding this system knows") from None
    if codec == "utf-8-sig":  # a byte-order mark is dropped from the header in any case
        codec = "utf-8"
    if 'id,"x"\r\n'.encode(codec) != b'id,"x"\r\n':
        raise SourceError(f"{setting}={name!r} is not ASCII-compatible; CSV lines cannot be framed")
    return codec


@dataclass(frozen=True)
class Record:
    """One record framed from the file: where it is and its bytes (a prefix, if truncated)."""

    start: int
    end: int
    line: int
    data: bytes
    truncated: bool
    digest: str
    prefix_hash: str
