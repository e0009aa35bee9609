"""The per-key request rate of ``moa serve``: a token bucket per API key.

Each key has ``burst`` tokens, refilled at ``rate`` per second; a request takes one. With none
left the request is refused with 429 ``rate_limited`` and ``Retry-After`` (whole seconds until a
token is back). Keys are limited independently; the clock is injectable for tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from moa.errors import ErrorCode, UserError


class RateLimited(UserError):
    """A key is over its request rate; ``retry_after`` is the seconds until it may send again."""

    def __init__(self, retry_after: int, rate: float) -> None:
        super().__init__(
            ErrorCode.RATE_LIMITED,
            f"this API key sent more than {rate:g} requests per second (the server's limit); retry after {retry_after} s",
        )
        self.retry_after = retry_after


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by key name (``None``: requests without a key share one bucket)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str | None, _Bucket] = {}

    def take(self, key: str | None) -> None:
        """Take a token for ``key`` or raise :class:`RateLimited`."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        raise RateLimited(max(1, math.ceil((1.0 - bucket.tokens) / self.rate)), self.rate)
