"""Per-source call pacing, enforced before each call: shared through Redis, or in-process.

A limit of N calls a minute spaces calls 60/N seconds apart. Each caller reserves the next free
slot atomically and sleeps until it, so several processes calling one upstream never exceed the
rate together, and 429s are avoided rather than discovered.
"""

import threading
import time
from collections.abc import Callable

import redis
import structlog

from kasparro.metrics import record_rate_limit_wait

log = structlog.get_logger(__name__)
_RESERVE_SLOT = """
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
local interval = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now_s, last + interval)
redis.call('SET', KEYS[1], tostring(slot), 'PX', math.ceil((slot - now_s + interval) * 1000) + 1000)
return tostring(slot - now_s)
"""


class CallPacer:
    """Space calls to one upstream at least ``60 / calls_per_minute`` seconds apart."""

    def __init__(self, name: str, calls_per_minute: float, sleep: Callable[[float], None]):
        if calls_per_minute <= 0:
            raise ValueError(f"calls per minute for {name} must be positive")
        self.name = name
        self.interval = 60.0 / calls_per_minute
        self.sleep = sleep

    def wait(self) -> float:
        """Block until this caller's slot; return how long it waited."""
        delay = self._reserve()
        if delay > 0:
            record_rate_limit_wait(self.name, delay)
            self.sleep(delay)
        return delay

    def _reserve(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """Release any connection the pacer holds."""


class LocalPacer(CallPacer):
    """Pacing shared by the threads of this process (the embedded default)."""

    _next_slots: dict[str, float] = {}
    _lock = threading.Lock()

    def _reserve(self) -> float:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slots.get(self.name, 0.0))
            self._next_slots[self.name] = slot + self.interval
        return slot - now


class RedisPacer(CallPacer):
    """Pacing shared by every process that uses the same Redis (API, workers, CLI)."""

    def __init__(self, name, calls_per_minute, sleep, url: str):
        super().__init__(name, calls_per_minute, sleep)
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.script = self.client.register_script(_RESERVE_SLOT)
        self.key = f"kasparro:ratelimit:{name}"
        self.fallback = LocalPacer(name, calls_per_minute, sleep)

    def _reserve(self) -> float:
        try:
            return float(self.script(keys=[self.key], args=[self.interval]))
        except redis.RedisError as exc:
            # Without Redis, pace this process alone rather than stop the run.
            log.warning(
                "etl.ratelimit.redis_unavailable", source=self.name, error=type(exc).__name__
            )
            return self.fallback._reserve()

    def close(self) -> None:
        """Close the Redis connection pool."""
        self.client.close()


def pacer_for(
    name: str, calls_per_minute: float, redis_url: str = "", sleep=time.sleep
) -> CallPacer:
    """Return the pacer for a source: through Redis when one is configured, else in-process."""
    if redis_url:
        return RedisPacer(name, calls_per_minute, sleep, redis_url)
    return LocalPacer(name, calls_per_minute, sleep)
