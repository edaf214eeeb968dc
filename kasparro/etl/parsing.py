"""Parse the numbers and dates that feeds send into exact decimals and UTC datetimes."""

import re
from datetime import UTC, date, datetime, time
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, InvalidOperation

from kasparro.db_types import canonical_text

MAX_DIGITS_BEFORE_POINT = 30
MAX_DIGITS_AFTER_POINT = 40  # PostgreSQL's NUMERIC takes more; the same limit on both engines

_SUFFIXES = {"K": 3, "M": 6, "B": 9, "T": 12}
_AMOUNT = re.compile(
    r"""^(?P<sign>[-+])?
        (?:US)?\$?\s*
        (?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<exp>[-+]?\d+))?
        \s*(?P<suffix>[KMBT])?
        \s*(?:USD)?$""",
    re.VERBOSE | re.IGNORECASE,
)
# Most feeds write plain decimals, already within the limits below: those need no other check.
_PLAIN_AMOUNT = re.compile(
    rf"(?:0|[1-9]\d{{0,{MAX_DIGITS_BEFORE_POINT - 1}}})(?:\.\d{{1,{MAX_DIGITS_AFTER_POINT}}})?"
)
_SLASH_DATE = re.compile(
    r"^(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<year>\d{4})(?:[ T](?P<time>\d{1,2}:\d{2}(?::\d{2})?))?$"
)
_TEXT_FORMATS = ("%b %d, %Y", "%d %b %Y", "%B %d, %Y", "%d %B %Y", "%b %d %Y")


class InvalidValue(ValueError):
    """A field that cannot be turned into the value it should hold; the message says why."""


def parse_amount(raw: object) -> Decimal:
    """Parse an amount like ``87387.12``, ``1,234.5``, ``$1.7T`` or ``4800 USD`` exactly.

    Every notation of one number gives one Decimal, written one way (``canonical_text``):
    ``1.7T``, ``1700000000000.00`` and ``1.7e12`` are the same value, so both engines find a
    restated value unchanged, and serve the same text for it.
    """
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
        if _PLAIN_AMOUNT.fullmatch(raw):
            if "." in raw and raw[-1] == "0":
                return Decimal(raw.rstrip("0").rstrip("."))
            return Decimal(raw)
        value = _parse_amount_text(raw)
    else:
        raise InvalidValue(f"not a number: {type(raw).__name__}")
    if not value.is_finite():
        raise InvalidValue(f"not a finite number: {raw!r}")
    if value < 0:
        raise InvalidValue(f"negative amount: {raw!r}")
    if value.adjusted() >= MAX_DIGITS_BEFORE_POINT:
        raise InvalidValue(f"amount out of range: {_clip(str(raw))!r}")
    if (decimals := _decimals(value)) > MAX_DIGITS_AFTER_POINT:
        raise InvalidValue(
            f"amount has {decimals} digits after the point; the limit is {MAX_DIGITS_AFTER_POINT}"
        )
    return Decimal(canonical_text(value))


def _decimals(value: Decimal) -> int:
    """Return how many digits after the point ``value`` needs (trailing zeros do not count)."""
    _, digits, exponent = value.as_tuple()
    zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -exponent - zeros)


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
    # Exactly: the default context would round to 28 significant digits.
    exact = Context(prec=max(28, len(value.as_tuple().digits)), Emax=MAX_EMAX, Emin=MIN_EMIN)
    value = value.scaleb(exponent, context=exact)
    return value.copy_negate() if match["sign"] == "-" else value


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
    if "\x00" in text:  # the standard parser stops reading at a NUL and would accept the rest
        raise InvalidValue(f"unrecognised timestamp: {_clip(text)!r}")
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


def check_text(label: str, value: str | None, limit: int) -> None:
    """Reject text that a database column could not hold as given, the same on every engine.

    PostgreSQL refuses NUL characters and unpaired surrogates that SQLite would store, and
    SQLite ignores the length that PostgreSQL enforces: neither may decide a row's fate.
    """
    if value is None:
        return
    if (at := value.find("\x00")) >= 0:
        raise InvalidValue(f"{label} contains a NUL character at character {at}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidValue(
            f"{label} is not valid text: a lone surrogate at character {exc.start}"
        ) from None
    if len(value) > limit:
        raise InvalidValue(f"{label} is {len(value)} characters long; the limit is {limit}")


def storable(text: str) -> str:
    """Return ``text`` with NUL characters and unpaired surrogates written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
