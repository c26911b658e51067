"""Error answers that list many entries are fitted to echo off the event loop."""

from __future__ import annotations

import asyncio
import threading

import msgspec
import pytest
from starlette.requests import Request

from ringfence.api import errors
from ringfence.errors import RequestError


def fitted_on(monkeypatch: pytest.MonkeyPatch, details: dict[str, object]) -> tuple[int, set[int], dict[str, object]]:
    """The event loop's thread, the threads that redacted the answer's text, and the answer."""
    threads: set[int] = set()
    redact = errors.redact

    def spied(text: str) -> str:
        threads.add(threading.get_ident())
        return redact(text)

    monkeypatch.setattr(errors, "redact", spied)
    request = Request({"type": "http", "method": "POST", "path": "/v1/events", "headers": []})

    async def answer() -> tuple[int, bytes]:
        error = RequestError(400, "invalid_events", "no valid event in the request", details)
        response = await errors.handle_error(request, error)
        return threading.get_ident(), bytes(response.body)

    loop, body = asyncio.run(answer())
    return loop, threads, msgspec.json.decode(body)


def rejections(n: int) -> dict[str, object]:
    return {
        "rejected": [{"index": i, "errors": [{"path": f"data.f{i}", "message": "unknown field"}]} for i in range(n)]
    }


def test_a_long_list_of_rejections_is_fitted_to_echo_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile test: 10,000 events of 25 unknown fields each, all rejected, took the event loop
    1.2 s to redact and encode; four such requests at once held every other client 3 s."""
    loop, threads, body = fitted_on(monkeypatch, rejections(errors.LONG_DETAILS + 1))
    assert threads
    assert loop not in threads
    error = body["error"]
    assert isinstance(error, dict)
    assert len(error["details"]["rejected"]) == errors.LONG_DETAILS + 1


def test_a_short_one_is_answered_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loop, threads, body = fitted_on(monkeypatch, rejections(3))
    assert threads == {loop}  # no hop to a thread for a few entries
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == "invalid_events"
