"""Parse the numbers and dates that feeds send into exact decimals and UTC datetimes."""

import re
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation

MAX_DIGITS_BEFORE_POINT = 30

_SUFFIXES = {"K": 3, "M": 6, "B": 9, "T": 12}
_AMOUNT = re.compile(
    r"""^(?P<sign>[-+])?
        (?:US)?\$?\s*
        (?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<exp>[-+]?\d+))?
        \s*(?P<suffix>[KMBT])?
        \s*(?:USD)?$""",
    re.VERBOSE | re.IGNORECASE,
)
_SLASH_DATE = re.compile(
    r"^(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<year>\d{4})(?:[ T](?P<time>\d{1,2}:\d{2}(?::\d{2})?))?$"
)
_TEXT_FORMATS = ("%b %d, %Y", "%d %b %Y", "%B %d, %Y", "%d %B %Y", "%b %d %Y")


class InvalidValue(ValueError):
    """A field that cannot be turned into the value it should hold; the message says why."""


def parse_amount(raw: object) -> Decimal:
    """Parse an amount like ``87387.12``, ``1,234.5``, ``$1.7T`` or ``4800 USD`` exactly."""
    if raw is None:
        raise InvalidValue("missing value")
    if isinstance(raw, bool):
        raise InvalidValue(f"not a number: {raw!r}")
    if isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, float):
        # repr() is the shortest text that round-trips, i.e. the number as the JSON wrote it.
        value = _decimal(repr(raw))
    elif isinstance(raw, str):
        value = _parse_amount_text(raw)
    else:
        raise InvalidValue(f"not a number: {type(raw).__name__}")
    if not value.is_finite():
        raise InvalidValue(f"not a finite number: {raw!r}")
    if value < 0:
        raise InvalidValue(f"negative amount: {raw!r}")
    if value.adjusted() >= MAX_DIGITS_BEFORE_POINT:
        raise InvalidValue(f"amount out of range: {raw!r}")
    return Decimal(format(value, "f"))  # plain notation: 1740000000000, not 1.74E+12


def _parse_amount_text(text: str) -> Decimal:
    stripped = text.strip()
    if not stripped:
        raise InvalidValue("missing value")
    match = _AMOUNT.match(stripped)
    if not match:
        raise InvalidValue(f"not a number: {_clip(stripped)!r}")
    value = _decimal(match["number"].replace(",", ""))
    exponent = int(match["exp"] or 0) + _SUFFIXES.get((match["suffix"] or "").upper(), 0)
    if abs(exponent) > MAX_DIGITS_BEFORE_POINT:
        raise InvalidValue(f"amount out of range: {_clip(stripped)!r}")
    value = value.scaleb(exponent)
    return -value if match["sign"] == "-" else value


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise InvalidValue(f"not a number: {_clip(text)!r}") from None


def parse_timestamp(raw: object) -> datetime:
    """Parse ISO 8601, ``YYYY-MM-DD HH:MM``, slash dates, ``Dec 27, 2025`` or epoch seconds to UTC.

    A time without a zone is taken as UTC. A slash date that reads as two different days
    (``03/04/2025``) is rejected rather than guessed.
    """
    if raw is None:
        raise InvalidValue("missing timestamp")
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise InvalidValue(f"not a timestamp: {type(raw).__name__}")
    text = str(raw).strip()
    if not text:
        raise InvalidValue("missing timestamp")
    parsed = _parse_epoch(text) or _parse_iso(text) or _parse_slash(text) or _parse_words(text)
    if parsed is None:
        raise InvalidValue(f"unrecognised timestamp: {_clip(text)!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidValue(f"timestamp out of range: {_clip(text)!r}") from None
    if not 2009 <= parsed.year <= 2100:
        raise InvalidValue(f"timestamp out of range: {_clip(text)!r}")
    return parsed


def _parse_epoch(text: str) -> datetime | None:
    if not re.fullmatch(r"\d{9,10}(\.\d+)?|\d{13}", text):
        return None
    seconds = Decimal(text) / (1000 if len(text) == 13 else 1)
    return datetime.fromtimestamp(float(seconds), UTC)


def _parse_iso(text: str) -> datetime | None:
    candidate = text[:-1] + "+00:00" if text[-1:] in "Zz" else text
    try:
        return datetime.fromisoformat(candidate)
    except ValueError:
        return None


def _parse_slash(text: str) -> datetime | None:
    match = _SLASH_DATE.match(text)
    if not match:
        return None
    a, b, year = int(match["a"]), int(match["b"]), int(match["year"])
    readings = {_day(year, m, d) for m, d in ((a, b), (b, a))} - {None}
    if len(readings) > 1:
        raise InvalidValue(f"ambiguous date, day and month could be swapped: {text!r}")
    if not readings:
        raise InvalidValue(f"not a calendar date: {text!r}")
    try:
        clock = time(*map(int, match["time"].split(":"))) if match["time"] else time()
    except ValueError:
        raise InvalidValue(f"not a time of day: {text!r}") from None
    return datetime.combine(readings.pop(), clock)


def _day(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _parse_words(text: str) -> datetime | None:
    for fmt in _TEXT_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
