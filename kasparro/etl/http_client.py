"""JSON over HTTP, paced, and retried through tenacity within a cap on tries and a time budget.

A 429 that says when to come back (``Retry-After``, or only ``x-ratelimit-reset``) is
waited out as asked; any other transient failure backs off exponentially, with jitter. Each retry
is logged with its source, attempt, reason and wait. Within ``connect_attempts(n)`` (the first
run as the app starts), an upstream that cannot be reached at all is given up after n tries.
"""

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from kasparro.etl.errors import SourceError
from kasparro.etl.ratelimit import CallPacer
from kasparro.metrics import record_rate_limit_wait, record_upstream_answer, record_upstream_retry

log = structlog.get_logger(__name__)
EPOCH_THRESHOLD = 1_000_000_000  # larger reset values are Unix times, smaller ones are seconds
BODY_CHUNK = 64 * 1024
# Tries of an upstream that cannot be reached at all, when a caller bounds them (None: the policy).
_connect_attempts: ContextVar[int | None] = ContextVar("connect_attempts", default=None)


@contextmanager
def connect_attempts(limit: int) -> Iterator[None]:
    """Within the block, give up on an upstream that cannot be reached after ``limit`` tries.

    "Cannot be reached" is a refused connection, an unknown host or a connect that timed out:
    nothing was answered. Every other failure (a read timeout, a 429, a 5xx) keeps the policy.
    """
    token = _connect_attempts.set(limit)
    try:
        yield
    finally:
        _connect_attempts.reset(token)


class UpstreamUnreachable(SourceError):
    """No connection to the upstream could be made within the tries allowed for it."""


class TransientUpstreamError(Exception):
    """A failure worth asking again about: a timeout, a lost connection, a 429 or a 5xx."""

    def __init__(
        self,
        reason: str,
        server_wait: float | None = None,
        status: int | None = None,
        unreachable: str = "",
    ):
        super().__init__(reason)
        self.reason = reason
        self.server_wait = server_wait
        self.status = status  # the HTTP status; None when no answer came back
        self.unreachable = unreachable  # why no connection could be made; "" when one was


def unreachable_reason(exc: requests.RequestException) -> str:
    """Return why no connection could be made (refused, unknown host...); "" if one was made."""
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    if isinstance(reason, NameResolutionError):
        return "host name not resolved"
    if isinstance(reason, NewConnectionError):
        cause = reason.__cause__
        return (getattr(cause, "strerror", None) or type(cause).__name__).lower()
    if isinstance(reason, ConnectTimeoutError):
        return "no answer to the connect"
    return ""


class CannotConnectAfter(stop_base):
    """Stop once ``attempts`` tries have each failed to make a connection."""

    def __init__(self, attempts: int):
        self.attempts = attempts

    def __call__(self, retry_state: RetryCallState) -> bool:
        """Return whether the last try could not connect and was the last one allowed."""
        failure = retry_state.outcome.exception()
        return bool(failure.unreachable) and retry_state.attempt_number >= self.attempts


class ServerOrBackoffWait(wait_base):
    """Wait as long as the server asked, or else as long as ``backoff`` says."""

    def __init__(self, backoff: wait_base):
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        """Return the server's wait for the failed attempt, else the backoff's."""
        asked = retry_state.outcome.exception().server_wait
        return self.backoff(retry_state) if asked is None else asked


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: capped in attempts and in total time."""

    max_attempts: int = 5
    max_total_seconds: float = 120.0
    base_seconds: float = 1.0
    max_backoff_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "RetryPolicy":
        """Read the policy from the API_* settings."""
        return cls(
            max_attempts=settings["API_MAX_ATTEMPTS"],
            max_total_seconds=settings["API_RETRY_BUDGET_SECONDS"],
            base_seconds=settings["API_BACKOFF_BASE_SECONDS"],
            max_backoff_seconds=settings["API_BACKOFF_MAX_SECONDS"],
        )

    def wait(self) -> wait_base:
        """Return the wait after a failed attempt: the server's, else a jittered backoff.

        The backoff doubles from ``base_seconds`` up to ``max_backoff_seconds`` and is multiplied
        by a random 0.5-1.0: half of it fixed, half drawn uniformly.
        """
        half = {"multiplier": self.base_seconds / 2, "max": self.max_backoff_seconds / 2}
        return ServerOrBackoffWait(wait_exponential(**half) + wait_random_exponential(**half))

    def stop(self, connect_attempts: int | None = None) -> stop_base:
        """Return the stop: after ``max_attempts`` tries, or before a wait past the budget.

        With ``connect_attempts``, also after that many tries when the last could not connect.
        """
        stop = stop_after_attempt(self.max_attempts) | stop_before_delay(self.max_total_seconds)
        return stop if connect_attempts is None else stop | CannotConnectAfter(connect_attempts)


def server_wait_seconds(headers, now: datetime | None = None) -> float | None:
    """Return how long a 429 asks us to wait: ``Retry-After``, else ``x-ratelimit-reset``."""
    now = now or datetime.now(UTC)
    retry_after = (headers.get("Retry-After") or "").strip()
    if retry_after:
        if retry_after.isdigit():
            return float(retry_after)
        try:
            return max(0.0, (parsedate_to_datetime(retry_after) - now).total_seconds())
        except (TypeError, ValueError):
            pass
    reset = (headers.get("x-ratelimit-reset") or "").strip()
    if not reset:
        return None
    try:
        value = float(reset)
    except ValueError:
        try:
            moment = datetime.fromisoformat(reset.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, (moment - now).total_seconds())
    return max(0.0, value - now.timestamp()) if value > EPOCH_THRESHOLD else value


def _finite_or_text(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text


def _int_or_text(text: str) -> int | str:
    limit = sys.get_int_max_str_digits()  # 0: no limit
    return int(text) if not limit or len(text.lstrip("-")) <= limit else text


class JsonClient:
    """GET JSON from one upstream, paced and retried on 429, 5xx, timeouts and lost connections."""

    def __init__(
        self,
        source: str,
        session: requests.Session,
        pacer: CallPacer,
        policy: RetryPolicy,
        timeout: float,
        max_bytes: int,
    ):
        self.source = source
        self.session = session
        self.pacer = pacer
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.connect_attempts = _connect_attempts.get()
        self.retrying = Retrying(
            retry=retry_if_exception_type(TransientUpstreamError),
            wait=policy.wait(),
            stop=policy.stop(self.connect_attempts),
            before_sleep=self._log_retry,
            retry_error_callback=self._give_up,
        )

    def get_json(self, url: str, params: dict[str, Any], where: str) -> Any:
        """Return the decoded JSON body; raise SourceError once retries are spent."""
        return self.retrying(self._get_once, url, params, where=where)

    def _get_once(self, url: str, params: dict[str, Any], where: str) -> Any:
        self.pacer.wait()
        status = None  # until an answer comes back
        try:
            with self.session.get(
                url, params=params, timeout=self.timeout, stream=True
            ) as response:  # an error's body is never read; a good one is read in bounds
                status = response.status_code
                body = self._body(response, where) if status == 200 else None
        except requests.Timeout as exc:
            raise TransientUpstreamError("timeout", unreachable=unreachable_reason(exc)) from exc
        except requests.RequestException as exc:
            raise TransientUpstreamError(
                f"cannot connect ({type(exc).__name__})", unreachable=unreachable_reason(exc)
            ) from exc
        finally:
            record_upstream_answer(self.source, status)
        if body is not None:
            return self._decode(body, where)
        if status != 429 and status < 500:
            raise SourceError(f"{where} answered HTTP {status}")
        asked = server_wait_seconds(response.headers) if status == 429 else None
        raise TransientUpstreamError(f"HTTP {status}", asked, status)

    def _log_retry(self, retry_state: RetryCallState) -> None:
        failure = retry_state.outcome.exception()
        record_upstream_retry(self.source)
        if failure.status == 429:
            record_rate_limit_wait(self.source, retry_state.upcoming_sleep)
        log.warning(
            "etl.http.retry",
            source=self.source,
            attempt=retry_state.attempt_number,
            reason=failure.reason,
            wait_seconds=round(retry_state.upcoming_sleep, 3),
        )

    def _give_up(self, retry_state: RetryCallState) -> None:
        where = retry_state.kwargs["where"]
        failure = retry_state.outcome.exception()
        tries = retry_state.attempt_number
        bounded = self.connect_attempts is not None and tries >= self.connect_attempts
        if failure.unreachable and bounded:
            times = "once" if tries == 1 else f"{tries} times"
            raise UpstreamUnreachable(
                f"{where}: cannot connect ({failure.unreachable}); tried {times}"
            )
        raise SourceError(
            f"{where}: gave up after {retry_state.attempt_number} attempts in "
            f"{retry_state.seconds_since_start:.1f}s: {retry_state.outcome.exception().reason}"
        )

    def _body(self, response: requests.Response, where: str) -> bytes:
        content_type = response.headers.get("Content-Type", "")
        if "json" not in content_type.lower():
            raise SourceError(f"{where} answered {content_type or 'no content type'}, not JSON")
        too_large = SourceError(
            f"{where} is larger than API_MAX_PAGE_BYTES ({self.max_bytes} bytes)"
        )
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large
        body = bytearray()
        for chunk in response.iter_content(BODY_CHUNK):
            body += chunk
            if len(body) > self.max_bytes:
                raise too_large
        return bytes(body)

    @staticmethod
    def _decode(body: bytes, where: str) -> Any:
        # What one coin may hold must not fail the page: bytes that are not UTF-8 become lone
        # surrogates, and numbers no store can hold (1e999, NaN, a 5000-digit integer) stay
        # text, so that only the coin holding them is rejected, with the reason.
        try:
            return json.loads(
                body.decode("utf-8", "surrogateescape"),
                parse_float=_finite_or_text,
                parse_int=_int_or_text,
                parse_constant=str,
            )
        except ValueError:
            raise SourceError(f"{where} answered with a body that is not valid JSON") from None
        except RecursionError:
            raise SourceError(f"{where} answered with JSON nested too deeply") from None
