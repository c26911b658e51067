"""Back-test slots: one per key, a few in all, each held until its child has exited."""

from __future__ import annotations

import pytest

from ringfence.api.backtests import BacktestSlots
from ringfence.errors import RequestError
from ringfence.testing import FixedClock


def refused(slots: BacktestSlots, key: str) -> RequestError:
    with pytest.raises(RequestError) as caught:
        slots.acquire(key, 10)
    assert caught.value.status == 429
    return caught.value


def test_one_per_key_and_a_bound_for_all_keys_with_retry_after() -> None:
    clock = FixedClock()
    slots = BacktestSlots(2, clock)
    release_a = slots.acquire("a", 30)
    clock.advance(5)
    assert refused(slots, "a").details == {"retry_after": 25}
    slots.acquire("b", 100)
    assert "2 back-tests are running" in str(refused(slots, "c"))
    release_a()
    slots.acquire("c", 10)


def test_a_slot_never_lapses_while_held_and_a_stale_release_frees_only_its_own() -> None:
    clock = FixedClock()
    slots = BacktestSlots(2, clock)
    first = slots.acquire("a", 30)
    clock.advance(3600)  # far past its expected end: the child may still be dying
    assert refused(slots, "a").details == {"retry_after": 1}
    first()  # the child has exited and been reaped
    fresh = slots.acquire("a", 30)
    first()  # a second, late call of the first release
    refused(slots, "a")
    fresh()
    slots.acquire("a", 30)
