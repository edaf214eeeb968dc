"""Structured logging through structlog, with every known secret scrubbed before output.

structlog and the standard library offer no redaction, so the scrubbing is ours. It runs twice:
on the event's values before rendering (so a secret-named key hides its value whatever it is),
and on the rendered line (so a secret inside an object's text form, a dict key or bytes is found
too). A secret also matches with its characters percent-encoded, as in a database or broker URL,
or escaped, as JSON and ``repr`` write quotes, backslashes and non-ASCII characters.

Every request writes an access line, so a line's cost is part of every answer's. structlog's own
events are rendered by structlog and written straight to stderr: handing them to the standard
library as records, to be formatted by its handler, took as long again. The standard library's
records (Celery's, urllib3's, other libraries') go through a handler with the same processors.
(gunicorn's own loggers do not propagate: they keep gunicorn's handlers and format.)

Lines are JSON, one object a line, for log pipelines, or structlog's console format for people.
``LOG_FORMAT`` chooses; left empty, a terminal on stderr gets the console format and anything
else (a container's log, a pipe, a file) gets JSON.
"""

import functools
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

import structlog

REDACTED = "[REDACTED]"
_PLAIN = frozenset({bool, int, float})  # scrub leaves these as they are; most values are
SENSITIVE_KEYS = ("authorization", "api_key", "password", "token", "secret")
_HANDLER_NAME = "kasparro"
LOG_FORMATS = ("json", "console")


def chosen_format(fmt: str) -> str:
    """Return the log format LOG_FORMAT ``fmt`` means; empty: console on a terminal, else JSON."""
    if not fmt:
        return "console" if sys.stderr.isatty() else "json"
    if fmt not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be empty or `json` or `console`, got {fmt!r}")
    return fmt


@functools.lru_cache(maxsize=4096)  # a log line's keys are nearly always the same few
def secret_named(key: Any) -> bool:
    """Return whether ``key`` names a secret (``api_key``, ``X-Api-Key``, ``db_password``...)."""
    if not isinstance(key, str):
        return False
    name = key.lower().replace("-", "_")
    return any(word in name for word in SENSITIVE_KEYS)


def _written_or_encoded(secret: str) -> str:
    """Return a pattern for ``secret`` as written, percent-encoded, or escaped by JSON or repr."""
    parts = []
    for char in secret:
        forms = [re.escape(char), "(?i:" + "".join(f"%{b:02X}" for b in char.encode()) + ")"]
        if char == " ":
            forms.append(r"\+")  # form encoding writes a space as "+"
        if not (char.isascii() and char.isprintable()):
            code = ord(char)
            forms.append(rf"(?i:\\(?:x{code:02x}|u{code:04x}|U{code:08x}))")
            # The repr of bytes escapes each byte of the character's UTF-8 form.
            forms.append("(?i:" + "".join(rf"\\+x{b:02x}" for b in char.encode()) + ")")
            if code > 0xFFFF:  # JSON writes it as a surrogate pair
                high, low = divmod(code - 0x10000, 0x400)
                forms.append(rf"(?i:\\u{0xD800 + high:04x}\\+u{0xDC00 + low:04x})")
        # Any run of backslashes may come first: escaping nests (a repr inside a JSON line).
        parts.append(rf"\\*(?:{'|'.join(forms)})")
    # A match starts where a run of backslashes starts, never inside one: linear, not quadratic.
    return r"(?<!\\)" + "".join(parts)


class SecretRedactor:
    """A structlog processor that replaces secret values, and values of secret-named keys."""

    def __init__(self, secrets: Iterable[str]):
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(_written_or_encoded(s) for s in self.secrets))
            if self.secrets
            else None
        )
        # Every form the pattern finds keeps a secret's letters and digits as they are (only
        # other characters get escaped or percent-encoded), so a text holding none of these
        # runs holds no secret and needs no scan: most log lines, at a substring test's cost.
        runs = [max(re.findall(r"[A-Za-z0-9]+", s) or [""], key=len) for s in self.secrets]
        self._markers = (
            None if any(len(run) < 3 for run in runs) else re.compile("|".join(runs)).search
        )

    def _may_hold_secret(self, text: str) -> bool:
        return self._markers is None or self._markers(text) is not None

    def scrub(self, value: Any) -> Any:
        """Return ``value`` with every secret in it replaced."""
        if value is None or type(value) in _PLAIN:
            return value
        if isinstance(value, str):
            if self._pattern is None or not self._may_hold_secret(value):
                return value
            return self._pattern.sub(REDACTED, value)
        if isinstance(value, dict):
            return {
                self.scrub(k): REDACTED if secret_named(k) and v else self.scrub(v)
                for k, v in value.items()
            }
        if isinstance(value, tuple) and hasattr(value, "_make"):  # a named tuple
            return value._make(self.scrub(v) for v in value)
        if isinstance(value, list | tuple | set | frozenset):
            return type(value)(self.scrub(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(str(value))
        return value

    def __call__(self, logger: Any, method: str, event: dict[str, Any] | str) -> Any:
        """Scrub an event before rendering, or a rendered line after it."""
        return self.scrub(event)


class _CurrentStderrHandler(logging.StreamHandler):
    """Write to whatever ``sys.stderr`` is when a record is emitted, so redirection is honoured."""

    def __init__(self, redactor: SecretRedactor):
        super().__init__()
        self.redactor = redactor

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass

    def handleError(self, record: logging.LogRecord) -> None:
        """Report a record that could not be written, without the arguments it carried.

        ``logging``'s own report prints the record's arguments, and those may be secrets.
        """
        if not logging.raiseExceptions:
            return
        error = sys.exception()
        report = (
            f"--- logging error: {type(error).__name__}: {error}; logger {record.name}, "
            f"message {record.msg!r} at {record.pathname}:{record.lineno} ---\n"
        )
        try:
            sys.stderr.write(self.redactor.scrub(report))
        except Exception:  # stderr itself is gone; there is nowhere left to report to
            pass


class _StderrLogger:
    """A structlog logger writing each rendered line to whatever ``sys.stderr`` is at the time.

    It writes under the standard-library handler's lock, so that lines of both never interleave.
    It carries the name ``structlog.get_logger`` was given, for ``add_logger_name``, and the
    level of the standard-library logger of that name, for ``filter_by_level``.
    """

    def __init__(self, handler: logging.Handler, name: str | None = None):
        self.handler = handler
        self.name = name
        self._levels = logging.getLogger(name)

    @property
    def disabled(self) -> bool:
        """Return whether the standard-library logger of this name is disabled."""
        return self._levels.disabled

    def getEffectiveLevel(self) -> int:
        """Return the level the standard-library logger of this name logs from."""
        return self._levels.getEffectiveLevel()

    def msg(self, message: str) -> None:
        """Write one rendered line."""
        with self.handler.lock:
            try:
                sys.stderr.write(message + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):  # stderr is closed or gone: nowhere left to write
                pass

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def configure_logging(level: str, fmt: str, secrets: Iterable[str]) -> None:
    """Send structlog and standard-library logs through one redacting renderer to stderr.

    ``fmt`` is LOG_FORMAT: ``json``, ``console``, or empty to choose by what stderr is.
    """
    fmt = chosen_format(fmt)
    redactor = SecretRedactor(secrets)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    handler = _CurrentStderrHandler(redactor)
    handler.set_name(_HANDLER_NAME)
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, renderer, redactor],
        logger_factory=functools.partial(_StderrLogger, handler),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
                redactor,  # the rendered line: objects' text forms, dict keys, bytes
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # start-up chatter
