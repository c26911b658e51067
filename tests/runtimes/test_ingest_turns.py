"""Requests take turns for validation, key by key: a key's many requests in parallel wait in
its own line, and a request of another key waits behind at most one of each line and those
under way. Found by a re-test: first come first served let one key's 16 connections hold every
other producer's requests for a minute."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ringfence.errors import ClientGone, OverloadedError, RequestError
from ringfence.runtimes import turns as turns_module
from ringfence.runtimes.turns import Turns


async def run_turns(turns: Turns, requests: list[tuple[str, int]], order: list[str], hold: asyncio.Event) -> None:
    async def one(producer: str, size: int, label: str) -> None:
        async with turns.turn(producer, size):
            order.append(label)
            await hold.wait()

    tasks = []
    for i, (producer, size) in enumerate(requests):
        tasks.append(asyncio.create_task(one(producer, size, f"{producer}{i}")))
        await asyncio.sleep(0)  # in this order
    for _ in range(len(requests)):
        await asyncio.sleep(0)
    hold.set()
    await asyncio.gather(*tasks)


def test_lines_take_turns_so_one_key_does_not_hold_another_behind_all_its_requests() -> None:
    order: list[str] = []

    async def scenario() -> None:
        turns = Turns(busy_bytes=100)
        hold = asyncio.Event()
        # a flood of one key's requests, each filling what may be under way, then another key's
        requests = [("a", 100)] * 6 + [("b", 100)]
        await run_turns(turns, requests, order, hold)

    asyncio.run(scenario())
    # a0 was under way; then the lines alternate: b6 comes second, not last
    assert order.index("b6") <= 2, order
    assert sorted(order) == sorted(["a0", "a1", "a2", "a3", "a4", "a5", "b6"])


def test_small_bodies_go_together_up_to_the_bound_and_a_larger_one_alone() -> None:
    async def scenario() -> list[int]:
        turns = Turns(busy_bytes=100)
        under_way: list[int] = []
        most = [0]
        release = asyncio.Event()

        async def one(size: int) -> None:
            async with turns.turn("k", size):
                under_way.append(size)
                most[0] = max(most[0], sum(under_way))
                await release.wait()
                under_way.remove(size)

        tasks = [asyncio.create_task(one(size)) for size in (40, 40, 40, 500)]
        await asyncio.sleep(0.01)
        first = sum(under_way)
        release.set()
        await asyncio.gather(*tasks)
        return [first, most[0]]

    first, most = asyncio.run(scenario())
    assert first == 80  # two of 40 at once; the third would pass the bound
    assert most == 500  # the large one alone


def test_a_request_whose_client_left_is_dropped_from_its_line_and_frees_its_turn() -> None:
    async def scenario() -> list[str]:
        turns = Turns(busy_bytes=10)
        done: list[str] = []
        release = asyncio.Event()
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def one(label: str, left: asyncio.Future[None] | None = None) -> None:
            try:
                async with turns.turn(label, 10, None if left is None else lambda: left):
                    done.append(label)
                    await release.wait()
            except ClientGone:
                done.append(f"{label} gone")

        first = asyncio.create_task(one("first"))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(one("left", gone))
        after = asyncio.create_task(one("after"))
        await asyncio.sleep(0.01)
        gone.set_result(None)  # its client disconnected while it waited
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(first, waiting, after)
        return done

    assert asyncio.run(scenario()) == ["first", "left gone", "after"]


def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    async def scenario() -> Turns:
        turns = Turns(busy_bytes=10)
        release = asyncio.Event()

        async def one() -> None:
            async with turns.turn("k", 10):
                await release.wait()

        first = asyncio.create_task(one())
        await asyncio.sleep(0)
        second = asyncio.create_task(one())
        await asyncio.sleep(0.01)
        second.cancel()
        release.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await second
        return turns

    turns = asyncio.run(scenario())
    assert turns._busy == 0
    assert turns._lines == {}


def test_a_key_holds_a_bounded_number_of_requests_and_all_keys_a_bounded_size_as_it_arrives() -> None:
    turns = Turns()
    per_key = turns_module.MAX_HELD_BYTES_PER_KEY
    with contextlib.ExitStack() as stack:
        for _ in range(turns_module.MAX_REQUESTS_PER_KEY):
            stack.enter_context(turns.holding("k"))
        with pytest.raises(RequestError) as refused, turns.holding("k"):
            pass
        assert refused.value.status == 429
        # places held with nothing sent hold no bytes: idle connections of a few keys once
        # claimed the declared lengths of their bodies, and every key's requests were refused
        for key in range(8):
            for _ in range(turns_module.MAX_REQUESTS_PER_KEY):
                stack.enter_context(turns.holding(f"idle-{key}"))
        take = stack.enter_context(turns.holding("another"))
        take(per_key - 10)
        with pytest.raises(RequestError) as key_full, turns.holding("another") as more:
            more(11)  # past what one key may hold
        assert key_full.value.status == 429
        full = turns_module.MAX_HELD_BYTES // per_key
        for key in range(1, full):
            stack.enter_context(turns.holding(f"big-{key}"))(per_key - 10)
        with turns.holding("last") as last:
            last(full * 10)
            with pytest.raises(OverloadedError):
                last(1)
    with turns.holding("big") as take:
        take(per_key)  # all given back


def test_a_key_whose_requests_took_long_to_validate_waits_behind_the_others() -> None:
    """Found by a re-test: bodies of events each just under an ordinary event's time (2 s a
    body, charged nothing) got one turn in two, and another key's requests waited 25-70 s."""

    async def scenario() -> list[str]:
        turns = Turns(busy_bytes=100)
        order: list[str] = []
        release = asyncio.Event()

        async def one(producer: str, label: str) -> None:
            async with turns.turn(producer, 100):
                order.append(label)
                await release.wait()

        tasks = [asyncio.create_task(one("heavy", f"heavy{n}")) for n in range(4)]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(one("light", f"light{n}")) for n in (4, 5)]
        await asyncio.sleep(0.01)
        turns.spent("heavy", 10.0)  # what its first request took, told as it ends
        release.set()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario())[:3] == ["heavy0", "light4", "light5"]


def test_a_key_fresh_or_idle_a_while_does_not_go_ahead_of_a_steady_ones_small_request() -> None:
    """Found by a third re-test: ordered by the time keys spent lately, twelve keys that had sent
    nothing went ahead of a steady producer, each with a body of seconds, and held it 22 s."""
    order: list[str] = []

    async def scenario() -> None:
        turns = Turns(busy_bytes=4_000_000)
        for _ in range(50):  # a steady producer, served as it sends
            async with turns.turn("steady", 10_000):
                pass
            turns.spent("steady", 0.002)
        hold = asyncio.Event()
        fresh = [(f"fresh{n}", 3_800_000) for n in range(12)]
        await run_turns(turns, [*fresh, ("steady", 10_000)], order, hold)

    asyncio.run(scenario())
    assert order.index("steady12") <= 1, order  # behind the body under way at most


def test_a_stop_refuses_what_waits_and_what_comes_and_lets_what_is_under_way_finish() -> None:
    """The server stops: requests waiting for their turn are answered at once, not held until
    the grace period ends and cancels them (uvicorn then answered 500)."""

    async def scenario() -> tuple[list[str], Turns]:
        turns = Turns(busy_bytes=10)
        outcomes: list[str] = []
        release = asyncio.Event()

        async def one(label: str) -> None:
            try:
                async with turns.turn(label, 10):
                    await release.wait()
                    outcomes.append(f"{label} done")
            except OverloadedError as exc:
                outcomes.append(f"{label}: {exc}")

        under_way = asyncio.create_task(one("a"))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(one(label)) for label in ("b", "c")]
        await asyncio.sleep(0.01)
        turns.stop(lambda: OverloadedError("stopping", 1))
        await asyncio.gather(*waiting)
        await one("later")
        release.set()
        await under_way
        return outcomes, turns

    outcomes, turns = asyncio.run(scenario())
    assert outcomes == ["b: stopping", "c: stopping", "later: stopping", "a done"]
    assert turns._busy == 0
    assert turns._lines == {}
