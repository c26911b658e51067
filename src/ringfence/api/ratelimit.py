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
        """Spend ``cost`` tokens; return 0, or the seconds to wait when too few are left. A cost
        over the burst goes through from a full bucket and leaves it in debt: the next waits
        until the cost is paid back, so no cost and no burst under 1 gets past the rate."""
        need = min(cost, self.burst)
        now = self._clock.time()
        with self._lock:
            tokens, at = self._buckets.pop(name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= need:
                tokens -= cost
            else:
                wait = (need - tokens) / self.rate
            self._buckets[name] = (tokens, now)
            if len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)
        return wait

    def spend(self, name: str, cost: float) -> None:
        """Spend ``cost`` tokens on something already done, into debt if need be: what comes
        next waits until it is paid back."""
        now = self._clock.time()
        with self._lock:
            tokens, at = self._buckets.pop(name, (self.burst, now))
            self._buckets[name] = (min(self.burst, tokens + (now - at) * self.rate) - cost, now)
            if len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)

    def give_back(self, name: str, cost: float) -> None:
        """Return what :meth:`take` spent on something that was then not done."""
        with self._lock:
            if name in self._buckets:
                tokens, at = self._buckets[name]
                self._buckets[name] = (min(self.burst, tokens + cost), at)

    def check(self, name: str, message: str, cost: float = 1.0, code: str = "rate_limited") -> None:
        """Raise 429 (``code``) with Retry-After when ``name`` is over its limit."""
        wait = self.take(name, cost)
        if wait > 0:
            raise RequestError(429, code, message, {"retry_after": math.ceil(wait)})
