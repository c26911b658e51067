"""Abuse limits: a token bucket per API key, and one per client address for failed
authentications (so keys cannot be guessed at speed). Over the limit: 429 + Retry-After."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

from ringfence.clock import Clock
from ringfence.errors import RequestError

MAX_TRACKED = 100_000


class TokenBuckets:
    """``rate`` tokens a second up to ``burst``, per name; the least recently used names are forgotten."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # name -> (tokens, at)

    def take(self, name: str, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens; return 0, or the seconds to wait when too few are left."""
        now = self._clock.time()
        with self._lock:
            tokens, at = self._buckets.pop(name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= cost:
                tokens -= cost
            else:
                wait = (min(cost, self.burst) - tokens) / self.rate
            self._buckets[name] = (tokens, now)
            if len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)
        return wait

    def check(self, name: str, message: str, cost: float = 1.0) -> None:
        """Raise 429 with Retry-After when ``name`` is over its limit."""
        wait = self.take(name, cost)
        if wait > 0:
            raise RequestError(429, "rate_limited", message, {"retry_after": math.ceil(wait)})
