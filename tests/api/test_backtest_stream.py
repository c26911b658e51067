"""A streamed back-test (NDJSON) whose client stops reading: every write is bounded, and the
child is killed when the response is abandoned, not left running behind a stalled ``send``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Message

from ringfence.api import backtests
from ringfence.runtimes.backtest import start_child
from ringfence.runtimes.embedded.backtest import CHILD_MODULE
from tests.helpers.backtest import backtest_children, job, journal, run


@pytest.mark.serial  # < 3 s
def test_a_client_that_stops_reading_gets_its_response_abandoned_and_its_child_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backtests, "WRITE_TIMEOUT_S", 0.3)
    path = journal(tmp_path, 5_000)
    exited: list[bool] = []

    async def stalled_client() -> tuple[float, list[Message]]:
        child = await start_child(
            job(path, limit=5_000, budget_s=60.0), CHILD_MODULE, on_exit=lambda: exited.append(True)
        )
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                await asyncio.Event().wait()  # a TCP window of 0: this write never completes

        async def receive() -> Message:
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError

        scope: dict[str, Any] = {"type": "http", "asgi": {"spec_version": "2.3"}}
        started = time.monotonic()
        await asyncio.wait_for(backtests.BacktestStream(child, asyncio.Event())(scope, receive, send), 10)
        await asyncio.wait_for(asyncio.shield(child.exited), 5)
        return time.monotonic() - started, sent

    elapsed, sent = run(stalled_client())
    assert elapsed < 3.0  # not the 60 s budget, nor for ever
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert b"progress" in sent[1]["body"]
    assert exited == [True]  # the slot's release ran: the child has been reaped
    assert backtest_children() == []


@pytest.mark.serial  # < 5 s
def test_a_streamed_back_test_ends_with_a_last_line_as_the_server_begins_to_stop(tmp_path: Path) -> None:
    """Not held until the server's grace period cancels it, cut short with no last line."""
    path = journal(tmp_path, 5_000)
    exited: list[bool] = []

    async def stopping_server() -> tuple[float, list[bytes]]:
        child = await start_child(
            job(path, limit=5_000, budget_s=60.0), CHILD_MODULE, on_exit=lambda: exited.append(True)
        )
        draining = asyncio.Event()
        bodies: list[bytes] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                bodies.append(message["body"])
                draining.set()  # the stop begins once the first progress line is out

        async def receive() -> Message:
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError

        scope: dict[str, Any] = {"type": "http", "asgi": {"spec_version": "2.3"}}
        started = time.monotonic()
        await asyncio.wait_for(backtests.BacktestStream(child, draining)(scope, receive, send), 10)
        await asyncio.wait_for(asyncio.shield(child.exited), 5)
        return time.monotonic() - started, bodies

    elapsed, bodies = run(stopping_server())
    assert elapsed < 5.0
    assert b"progress" in bodies[0]
    assert json.loads(bodies[-1]) == {"error": {"code": "overloaded", "message": "the server is stopping; retry"}}
    assert exited == [True]
    assert backtest_children() == []
