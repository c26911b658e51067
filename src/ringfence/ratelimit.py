"""Abuse limits: token buckets, a bucket a name (an API key, a client address). Over the limit:
429 + Retry-After.

:class:`Buckets` holds the arithmetic once; where the tokens live is a subclass's:
:class:`TokenBuckets` in this process's memory (the per-request rate limits, which each API
process may keep for itself), or a store every API process shares and a restart keeps
(:mod:`ringfence.store.budgets`, :mod:`ringfence.runtimes.aws.budgets`), for a budget of what a
key may add to the store: N processes or Lambda containers must not give it N budgets."""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from ringfence.clock import Clock
from ringfence.errors import RequestError

MAX_TRACKED = 100_000
MAX_CLOCK_GAP_S = 60.0  # how far ahead of a process's clock a bucket's time may stand (another host's)
R = TypeVar("R")
Change = Callable[[float], tuple[float, R]]  # the tokens refilled to now -> (tokens to keep, an answer)
Kept = tuple[float, float]  # a bucket as a store keeps it: its tokens, and when


class Buckets(ABC):
    """``rate`` tokens a second up to ``burst``, per name."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock

    @abstractmethod
    def _update(self, name: str, change: Change[R]) -> R:
        """Atomically: ``name``'s bucket through :meth:`changed` with ``change``; keep what it
        gives to keep, return its answer."""

    def changed(self, kept: Kept | None, now: float, change: Change[R]) -> tuple[Kept | None, R]:
        """The bucket ``kept`` (None: a full one) after ``change`` at ``now``, and its answer; None
        to keep when nothing changed (a refusal, a give-back to a full bucket): kept as it was, it
        refills to the same tokens, so a store writes nothing for a key refused again and again.
        Its time never goes back: a process whose clock is behind another's keeps the other's
        time and refills nothing until its own passes it, so API hosts with clocks apart do not
        each refill the same seconds (alternating between two 5 s apart gave a key 7 times its
        rate). Up to :data:`MAX_CLOCK_GAP_S` ahead: a clock far ahead (hours, stepped back since)
        would otherwise stop every key's refills that long; clocks further apart than that gain
        what is past it at each alternation."""
        if kept is None:
            tokens, at = self.burst, now
        else:
            at = min(kept[1], now + MAX_CLOCK_GAP_S)
            tokens = self.refilled(kept[0], at, now)
        left, answer = change(tokens)
        if left == tokens and (kept is None or at == kept[1]):
            return None, answer
        return (left, max(at, now)), answer  # (a time brought back within the gap is kept too, once)

    def refilled(self, tokens: float, at: float, now: float) -> float:
        """``tokens`` kept at ``at``, at ``now`` (a clock gone back refills nothing)."""
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def full_at(self, tokens: float, at: float) -> float:
        """When a bucket left with ``tokens`` at ``at`` is full again (a store may forget it then)."""
        return at + max(0.0, self.burst - tokens) / self.rate

    def take(self, name: str, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens; return 0, or the seconds to wait when too few are left. A cost
        over the burst goes through from a full bucket and leaves it in debt: the next waits
        until the cost is paid back, so no cost and no burst under 1 gets past the rate."""
        need = min(cost, self.burst)

        def taken(tokens: float) -> tuple[float, float]:
            return (tokens - cost, 0.0) if tokens >= need else (tokens, (need - tokens) / self.rate)

        return self._update(name, taken)

    def spend(self, name: str, cost: float) -> None:
        """Spend ``cost`` tokens on something already done, into debt if need be: what comes
        next waits until it is paid back."""
        self._update(name, lambda tokens: (tokens - cost, None))

    def give_back(self, name: str, cost: float) -> None:
        """Return what :meth:`take` spent on something that was then not done."""
        self._update(name, lambda tokens: (min(self.burst, tokens + cost), None))

    def check(self, name: str, message: str, cost: float = 1.0, code: str = "rate_limited") -> None:
        """Raise 429 (``code``) with Retry-After when ``name`` is over its limit."""
        wait = self.take(name, cost)
        if wait > 0:
            raise RequestError(429, code, message, {"retry_after": math.ceil(wait)})


class TokenBuckets(Buckets):
    """Buckets in this process's memory; past :data:`MAX_TRACKED` names the least recently used
    are forgotten (full again)."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        super().__init__(rate, burst, clock)
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, Kept] = OrderedDict()

    def _update(self, name: str, change: Change[R]) -> R:
        now = self.clock.time()
        with self._lock:
            kept, answer = self.changed(self._buckets.get(name), now, change)
            if kept is not None:
                self._buckets[name] = kept
            if name in self._buckets:  # the most recently used
                self._buckets.move_to_end(name)
                if len(self._buckets) > MAX_TRACKED:
                    self._buckets.popitem(last=False)
        return answer
