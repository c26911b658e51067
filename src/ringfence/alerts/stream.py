"""Live alert changes for ``GET /v1/alerts/stream`` (server-sent events to the dashboard).

The dispatcher thread publishes; each subscriber is an asyncio queue on the API's loop.
A slow subscriber loses its oldest events rather than growing memory.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Protocol

QUEUE_SIZE = 1_000


class AlertPublisher(Protocol):
    """Where the dispatcher shows the changes it took in: this process's stream, or a feed
    other processes follow (the kafka runtime's)."""

    def publish(self, event: dict[str, Any]) -> None: ...


class AlertStream:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = []

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        with self._lock:
            self._subscribers.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._subscribers = [(loop, q) for loop, q in self._subscribers if q is not queue]

    def publish(self, event: dict[str, Any]) -> None:
        """Hand ``event`` to every subscriber (callable from any thread)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, event)
            except RuntimeError:  # its loop is closed
                self.unsubscribe(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


def _offer(queue: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(event)
