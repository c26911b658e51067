"""Budgets every API container shares, in the alerts table (:class:`~ringfence.ratelimit.Buckets`):
Lambda runs the API in as many containers as requests arrive at once, and recycles them, so a
budget in a container's memory was one more budget for each, full again with each new one.

A bucket is an item (``budget|<kind>|<digest of the name>``, ``b``) holding its tokens, when, and
a version; a charge reads it consistently and writes it on condition that the version is still
the one read, so charges racing in two containers are applied one after the other (the loser
reads again). DynamoDB's TTL forgets a bucket once it is full again."""

from __future__ import annotations

import hashlib
import random
import time

from ringfence.clock import Clock
from ringfence.errors import OverloadedError
from ringfence.ratelimit import Buckets, Change, Kept, R
from ringfence.runtimes.aws.items import TableItems, n, s
from ringfence.runtimes.aws.resources import contention_pause_s

ATTEMPTS = 8  # a key's own changes racing in as many containers; past it, 503 and try again
_SORT_KEY = "b"


class DynamoBuckets(Buckets):
    def __init__(self, items: TableItems, kind: str, rate: float, burst: float, clock: Clock) -> None:
        super().__init__(rate, burst, clock)
        self._items = items
        self._kind = kind
        self._rng = random.Random()  # nosec B311 # noqa: S311 - backoff jitter, not security

    def _pk(self, name: str) -> str:
        # a digest: a JWT's subject may be longer than a key attribute, and is nobody's business here
        return f"budget|{self._kind}|{hashlib.sha256(name.encode()).hexdigest()[:32]}"

    def _update(self, name: str, change: Change[R]) -> R:
        pk = self._pk(name)
        for attempt in range(1, ATTEMPTS + 1):
            item = self._items.get(pk, _SORT_KEY)
            now = self.clock.time()
            version = int(item["v"]["N"]) if item else 0
            found: Kept | None = None
            if item is not None and float(item["ttl"]["N"]) > now:  # TTL deletes late: an expired one is full
                found = (float(item["tokens"]["N"]), float(item["at"]["N"]))
            kept, answer = self.changed(found, now, change)
            if kept is None or self._put(pk, *kept, version):  # a refusal writes nothing
                return answer
            time.sleep(contention_pause_s(attempt, self._rng))
        raise OverloadedError("too many changes of this API key at once: try again", 1)

    def _put(self, pk: str, tokens: float, at: float, version: int) -> bool:
        """Write the bucket if its version is still ``version`` (0: there was none); False if not."""
        item = {
            "pk": s(pk),
            "sk": s(_SORT_KEY),
            "tokens": n(float(tokens)),
            "at": n(float(at)),
            "v": n(version + 1),
            "ttl": n(int(self.full_at(tokens, at)) + 1),
        }
        if not version:
            return self._items.put_if(item, ConditionExpression="attribute_not_exists(pk)")
        return self._items.put_if(item, ConditionExpression="v = :v", ExpressionAttributeValues={":v": n(version)})
