"""JSON over HTTP with pacing, exponential backoff with jitter, and a retry budget.

Retries are explicit here rather than urllib3's ``Retry``: each one must be logged with its
source, attempt, reason and wait, and a 429 may say when to come back only in
``x-ratelimit-reset``, which ``Retry`` does not read.
"""

import itertools
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import structlog

from kasparro.etl.ratelimit import CallPacer
from kasparro.etl.sources.base import SourceError

log = structlog.get_logger(__name__)
EPOCH_THRESHOLD = 1_000_000_000  # larger reset values are Unix times, smaller ones are seconds
BODY_CHUNK = 64 * 1024


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

    def backoff(self, attempt: int) -> float:
        """Return the wait after failed attempt ``attempt`` (1-based): exponential, jittered."""
        ceiling = min(self.max_backoff_seconds, self.base_seconds * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)


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
        sleep=time.sleep,
        clock=time.monotonic,
    ):
        self.source = source
        self.session = session
        self.pacer = pacer
        self.policy = policy
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.sleep = sleep
        self.clock = clock

    def get_json(self, url: str, params: dict[str, Any], where: str) -> Any:
        """Return the decoded JSON body; raise SourceError once retries are spent."""
        started = self.clock()
        for attempt in itertools.count(1):
            self.pacer.wait()
            try:
                with self.session.get(
                    url, params=params, timeout=self.timeout, stream=True
                ) as response:  # an error's body is never read; a good one is read in bounds
                    body = self._body(response, where) if response.status_code == 200 else None
            except requests.Timeout:
                reason, wait = "timeout", self.policy.backoff(attempt)
            except requests.RequestException as exc:
                reason, wait = (
                    f"cannot connect ({type(exc).__name__})",
                    self.policy.backoff(attempt),
                )
            else:
                if body is not None:
                    return self._decode(body, where)
                if response.status_code != 429 and response.status_code < 500:
                    raise SourceError(f"{where} answered HTTP {response.status_code}")
                reason = f"HTTP {response.status_code}"
                wait = self.policy.backoff(attempt)
                asked = server_wait_seconds(response.headers)
                if response.status_code == 429 and asked is not None:
                    wait = asked
            spent = self.clock() - started
            if attempt == self.policy.max_attempts or spent + wait > self.policy.max_total_seconds:
                raise SourceError(
                    f"{where}: gave up after {attempt} attempts in {spent:.1f}s: {reason}",
                    transient=True,
                )
            log.warning(
                "etl.http.retry",
                source=self.source,
                attempt=attempt,
                reason=reason,
                wait_seconds=round(wait, 3),
            )
            self.sleep(wait)

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
