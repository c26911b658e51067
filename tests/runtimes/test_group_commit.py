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
