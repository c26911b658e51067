"""The embedded runtime's group committer as it closes: what was queued before ``close`` is
written and answered; what comes after is refused with a 503 at once, never left waiting."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from ringfence.errors import OverloadedError
from ringfence.events import validate_event
from ringfence.runtimes.embedded.group_commit import GroupCommitter
from ringfence.testing import event


class SlowLog:
    """An event log whose appends wait for ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.appending = threading.Event()
        self.appended: list[int] = []

    def append(self, events: list[Any], ingested_at: float) -> list[int | None]:
        self.appending.set()
        assert self.release.wait(10)
        start = len(self.appended)
        self.appended += [0] * len(events)
        return list(range(start, start + len(events)))

    def head(self) -> int:
        return len(self.appended)


def one() -> list[Any]:
    return [validate_event(json.dumps(event()).encode(), 2e9)]


def test_an_append_queued_before_close_is_written_and_one_after_is_refused_at_once() -> None:
    log = SlowLog()
    committer = GroupCommitter(log, lambda: 2e9, lambda head: None)  # type: ignore[arg-type]

    async def scenario() -> None:
        first = asyncio.ensure_future(committer.append(one()))
        await asyncio.to_thread(log.appending.wait, 5)  # the writer holds the first
        queued = asyncio.ensure_future(committer.append(one()))
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(asyncio.to_thread(committer.close))
        await asyncio.sleep(0.05)
        with pytest.raises(OverloadedError, match="stopping"):
            await asyncio.wait_for(committer.append(one()), 2)  # after close: refused, not left waiting
        log.release.set()
        assert await asyncio.wait_for(first, 5) == [0]
        assert await asyncio.wait_for(queued, 5) == [1]  # queued before close: written
        await asyncio.wait_for(closing, 10)

    asyncio.run(scenario())
    assert log.head() == 2


def test_a_group_that_fails_on_a_bug_is_answered_503_and_the_writer_lives_on() -> None:
    """A bug past the append's own handling (here in the commit itself) answers that group's
    requests, which were off the queue already, instead of leaving them waiting for ever."""
    log = SlowLog()
    log.release.set()
    committer = GroupCommitter(log, lambda: 2e9, lambda head: None)
    real_commit = committer._commit
    calls = 0

    def buggy_once(group: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ZeroDivisionError("a bug")
        real_commit(group)

    committer._commit = buggy_once  # type: ignore[method-assign]

    async def scenario() -> list[int | None]:
        with pytest.raises(OverloadedError, match="internal error"):
            await asyncio.wait_for(committer.append(one()), 5)
        return await asyncio.wait_for(committer.append(one()), 5)

    try:
        assert asyncio.run(scenario()) == [0]
        assert committer.alive
    finally:
        committer.close()
    assert not committer.alive


def test_a_writer_thread_ended_by_a_bug_makes_the_platform_unready(tmp_path: Any) -> None:
    """Appends are then refused until a restart: readiness must say so, so that an orchestrator
    stops sending this instance events (and restarts it), rather than see it ready for ever."""
    from ringfence.config import Settings
    from ringfence.runtimes.embedded import platform as embedded

    platform = embedded.Platform(Settings(data_dir=tmp_path, ingest_process=False))
    platform.start()
    try:
        for _ in range(100):
            if platform.ready:
                break
            threading.Event().wait(0.05)
        assert platform.ready
        committer = platform.committer
        assert committer is not None
        assert committer.alive

        waiting_get = committer._queue.get

        def broken_wait(block: bool = True, timeout: float | None = None) -> Any:
            if block:  # the writer's next wait for a request: a bug in its own loop
                raise ZeroDivisionError("a bug in the writer's own loop")
            return waiting_get(block, timeout)

        committer._queue.get = broken_wait  # type: ignore[method-assign]

        async def scenario() -> None:
            assert len(await asyncio.wait_for(committer.append(one()), 5)) == 1  # served; then the loop dies
            committer._thread.join(5)
            with pytest.raises(OverloadedError, match="stopping"):
                await asyncio.wait_for(committer.append(one()), 5)

        asyncio.run(scenario())
        assert not committer.alive
        assert not platform.accepting
        assert not platform.ready
    finally:
        platform.stop()
