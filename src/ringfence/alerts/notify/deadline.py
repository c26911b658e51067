"""A whole-send deadline for receivers' HTTP requests.

httpx's timeouts bound each network operation, not the request (encode/httpx#1450): a receiver
that answers a byte every half second holds a send, and the dispatcher's pass with it, for as
long as it likes. The client :func:`receiver_client` makes gives each connect, read and write
only what is left of the deadline :func:`within` sets, so a send ends within its receiver's
``timeout_s`` whatever the receiver does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

_deadline: ContextVar[float | None] = ContextVar("ringfence_send_deadline", default=None)


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Network operations of :func:`receiver_client` in this block end ``seconds`` from now."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def receiver_client() -> httpx.Client:
    """The HTTP client receivers send with: no redirects, the deadline of :func:`within`, and
    the environment's proxies as httpx reads them (``HTTPS_PROXY``, ``NO_PROXY``...), which a
    client given its own transport would otherwise ignore."""
    from httpx._utils import get_environment_proxies  # httpx's own reading of them

    mounts: dict[str, httpx.BaseTransport | None] = {
        pattern: None if url is None else _with_deadline(httpx.HTTPTransport(proxy=url))
        for pattern, url in get_environment_proxies().items()
    }
    return httpx.Client(follow_redirects=False, transport=_with_deadline(httpx.HTTPTransport()), mounts=mounts)


def _with_deadline(transport: httpx.HTTPTransport) -> httpx.HTTPTransport:
    """``transport`` whose connections (direct or through a proxy) are made by our backend.
    httpx takes no network backend: its pool's is replaced; httpx and httpcore are locked, and
    tests/alerts/test_receiver_faults.py fails on a release that moved it."""
    transport._pool._network_backend = _DeadlineBackend()
    return transport


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout``, cut to what is left of the deadline; ``error`` once nothing is."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the send's deadline has passed (its receiver's timeout_s)")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_tcp(host, port, left, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)
