"""How every runtime serves its HTTP API: uvicorn, hardened against connection exhaustion.

``ringfence up`` and ``ringfence serve ingest|api`` all call :func:`serve`. It binds the port
before anything is printed (:func:`bind`), trusts ``X-Forwarded-*`` only from the settings'
``forwarded_allow_ips``, and guards connections (:class:`ConnectionGuard`):

- a connection is *waiting* while its request head, or its request body, has not fully
  arrived; a waiting connection is closed when its deadline is up: ``request_head_timeout_s``
  for a head (after the connection opened, or its previous request was answered and all
  read), ``request_timeout_s`` for a body (after its head, or after an answer given before
  it was read);
- at most ``max_connections`` are open; past it, the oldest waiting connection is closed to
  make room, and only when every connection is busy (its request fully received) is the new
  one refused (503). Past that, :data:`PROBE_SLOTS` more connections are let in for
  ``GET /healthz`` or ``GET /readyz`` only, so an orchestrator can still see the server;
- at most ``max_connections_per_address`` are open from one client address (the oldest waiting
  one of that address makes room; else 429), except from ``forwarded_allow_ips`` proxies,
  which carry many clients;
- a request head larger than :data:`MAX_HEAD_BYTES` is refused (431), and a connection
  whose request body takes more than ``max_body_bytes`` (plus :data:`MAX_HEAD_BYTES` for
  chunk framing and trailers) on the wire is closed;
- a request answered before its body was read (401, 503 under backpressure) keeps its
  connection: the rest of its body is read and dropped, within those bytes and its body
  deadline (restarted at the answer), and the next request is served;
- a TLS handshake must finish within ``request_head_timeout_s`` (asyncio's default is 60 s);
- a connection whose client does not read what it is sent (the transport's buffer full, so
  writing paused: a response, an alert stream, answers to requests pipelined behind each
  other; or closed with answers still buffered, which a close would wait for) waits too, for
  the client to *read*: it is cut off (aborted) when the buffer stays so for
  ``request_timeout_s``, and it is among those closed to make room.

So neither idle, slow nor many connections from one address can starve ``/healthz`` nor hold
memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import resource
import socket
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from ringfence.config import Settings
from ringfence.errors import ConfigError
from ringfence.private_files import regular_input
from ringfence.runtimes.heap import freeze_start_up

log = logging.getLogger("ringfence.http")

MAX_HEAD_BYTES = 32 * 1024  # as nginx's default large_client_header_buffers (4 x 8k)
RESERVED_FDS = 256  # the process's own files: journal, store, their WAL, pipes, threads
BACKLOG = 2048
PROBE_SLOTS = 8  # connections past max_connections, for health probes only
# the kernel's buffer of what a connection has not sent yet (it keeps twice this for its own
# bookkeeping): left to grow, it took up to 4 MB of an answer a client did not read, 1.6 GB of
# the host's memory for 900 such clients of one viewer key (a hostile test), near the limit past
# which every TCP connection of the host suffers; 1,000 connections hold 256 MB at most now
SEND_BUFFER_BYTES = 128 * 1024
PROBE_LINES = (b"GET /healthz ", b"GET /healthz?", b"GET /readyz ", b"GET /readyz?")
_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
_TOO_MANY = b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_TOO_SLOW = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Waiting = Literal["head", "body", "read"] | None


class ConnectionGuard:
    """One server's open connections: how many in all and per address, and which of them are
    waiting for a request head or body, oldest first (the ones closed to make room)."""

    def __init__(
        self,
        max_connections: int,
        per_address: int,
        head_timeout_s: float,
        body_timeout_s: float,
        proxies: tuple[Network, ...] = (),
        max_body_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.max_connections = max_connections
        self.per_address = per_address
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        self.proxies = proxies
        self.max_body_wire_bytes = max_body_bytes + MAX_HEAD_BYTES  # with chunk sizes and trailers
        self.open: set[GuardedProtocol] = set()
        self.probes: set[GuardedProtocol] = set()  # let in past the limit, for a health probe
        self.waiting: OrderedDict[GuardedProtocol, None] = OrderedDict()
        self.by_address: Counter[str] = Counter()

    def admit(self, newcomer: GuardedProtocol) -> bytes | None:
        """Count ``newcomer`` in, closing waiting connections to make room; or the answer that
        refuses it (429 when its address has too many busy ones, 503 when everyone has)."""
        address = newcomer.address
        if not self._is_proxy(address):
            while self.by_address[address] >= self.per_address:
                if not self._evict(lambda conn: conn.address == address):
                    return _TOO_MANY
        while len(self.open) >= self.max_connections and self._evict(lambda conn: conn in self.open):
            pass
        if len(self.open) < self.max_connections:
            self.open.add(newcomer)
        else:
            while len(self.probes) >= PROBE_SLOTS:
                if not self._evict(lambda conn: conn in self.probes):
                    return _REFUSED
            self.probes.add(newcomer)
            newcomer.probe_only = True
        self.by_address[address] += 1
        return None

    def forget(self, conn: GuardedProtocol) -> None:
        self.waiting.pop(conn, None)
        if conn in self.open or conn in self.probes:
            self.open.discard(conn)
            self.probes.discard(conn)
            self.by_address[conn.address] -= 1
            if self.by_address[conn.address] <= 0:
                del self.by_address[conn.address]

    def _evict(self, among: Callable[[GuardedProtocol], bool]) -> bool:
        """Close the oldest waiting connection ``among`` those; False when there is none."""
        for conn in list(self.waiting):
            if conn.waiting_for() is None:  # its body arrived, or a response started: busy now
                self.waiting.pop(conn, None)
            elif among(conn):
                conn.drop()
                return True
        return False

    def _is_proxy(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.proxies)


class GuardedProtocol(asyncio.Protocol):
    """Mixed into uvicorn's httptools protocol class (see :func:`protocol_class`): the
    deadlines, the head size limit and the connection limits of one connection. The parser's
    callbacks say which part of a request is arriving, as the response alone cannot: a
    request may be answered before its body has arrived."""

    guard: ConnectionGuard
    # uvicorn's protocol classes define these
    cycle: Any
    pipeline: Any  # requests whose head arrived while an earlier one is being answered
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    address = ""
    probe_only = False  # admitted past max_connections: one GET /healthz or /readyz, then closed
    _timer: asyncio.TimerHandle | None = None
    _head_bytes = 0  # on the wire, of the request head arriving (from its first byte on)
    _body_bytes = 0  # on the wire, of the request body arriving
    _first_bytes = b""
    _head_too_large = False
    _trailer_bytes = 0  # of the request body's trailers so far
    _reading: Literal["head", "body"] | None = None  # the part of a request the parser is in
    _write_paused = False  # the transport's buffer is full: the client is not reading

    def waiting_for(self) -> Waiting:
        """What this connection still waits for from its client: that it reads what it was
        sent, a request head, the rest of a request body, or nothing (it is busy with a
        request). A body is waited for while the app reads it, and after an answer that did
        not (it is read and dropped)."""
        if self._write_paused or (self.transport.is_closing() and self.transport.get_write_buffer_size()):
            return "read"
        cycle = self.cycle
        if self._reading == "body" and cycle is not None:
            if self.pipeline:  # queued behind an earlier request (uvicorn stopped reading): busy
                return None
            # a body arriving while its response is being sent is busy, not waiting
            return None if cycle.response_started and not cycle.response_complete else "body"
        if cycle is None or cycle.response_complete:
            return "head"
        return None  # answering; a pipelined head may arrive meanwhile (its bytes are counted)

    # the parser's callbacks (httptools calls them by name, so these wrap uvicorn's)
    def on_message_begin(self) -> None:
        self._reading = "head"
        super().on_message_begin()  # type: ignore[misc]

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._reading == "body":
            # a trailer of a chunked body: uvicorn would add it to the request's headers, which
            # the app read long before (an Authorization there was believed, an X-Forwarded-For
            # too, and 8 MB of them held 190 MB a connection: a re-test); never kept, and bounded
            self._trailer_bytes += len(name) + len(value) + 4
            if self._trailer_bytes > MAX_HEAD_BYTES:
                self._head_too_large = True
                raise HeadTooLarge
            return
        super().on_header(name, value)  # type: ignore[misc]

    def on_headers_complete(self) -> None:
        # the bytes counted on the wire miss a head that arrived whole in one read with what
        # follows (its count is reset as the request completes): its parts count here too
        head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)  # type: ignore[misc,attr-defined]
        if head > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise HeadTooLarge  # the parser stops; uvicorn answers its error, 431 below
        self._reading = "body"
        self._body_bytes = 0
        super().on_headers_complete()  # type: ignore[misc]

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:  # no 431 after an answer begun (to a request whose trailers grew)
            cycle = self.cycle
            self.drop(b"" if cycle is not None and cycle.response_started else _TOO_LARGE)
        else:
            super().send_400_response(msg)  # type: ignore[misc]

    def on_message_complete(self) -> None:
        self._reading = None
        self._trailer_bytes = 0
        self._head_bytes = 0  # what follows in this read is the next request's
        super().on_message_complete()  # type: ignore[misc]

    def _wait(self, what: Literal["head", "body", "read"]) -> None:
        """Start waiting for ``what``: its deadline runs from now."""
        if self._timer is not None:
            self._timer.cancel()
        if what != "body":
            self.guard.waiting.pop(self, None)  # a new wait: the youngest now
        self.guard.waiting[self] = None
        timeout = self.guard.head_timeout_s if what == "head" else self.guard.body_timeout_s  # body, read
        self._timer = self.loop.call_later(timeout, self._on_deadline, what)

    def _stop_waiting(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.guard.waiting.pop(self, None)

    def _on_deadline(self, what: Literal["head", "body", "read"]) -> None:
        self._timer = None
        if self.waiting_for() == what:
            self.drop(_TOO_SLOW if what == "body" else b"")
        elif self.waiting_for() is None:
            self.guard.waiting.pop(self, None)

    def drop(self, answer: bytes = b"") -> None:
        """Close this connection now (with ``answer`` written first, if any)."""
        self._stop_waiting()
        self.guard.forget(self)
        if self.transport.get_write_buffer_size():  # paused writing too: its buffer is full
            self.transport.abort()  # a close would wait, for ever, for the client to read the buffer
        elif not self.transport.is_closing():
            if answer:
                self.transport.write(answer)
            self.transport.close()

    # the transport's flow control (uvicorn's protocol pauses its writers; these also time it)
    def pause_writing(self) -> None:
        self._write_paused = True
        super().pause_writing()
        if not self.transport.is_closing():
            self._wait("read")

    def resume_writing(self) -> None:
        self._write_paused = False
        super().resume_writing()
        if self.transport.is_closing():
            return
        waiting = self.waiting_for()
        if waiting is None:
            self._stop_waiting()
        else:
            self._wait(waiting)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not isinstance(transport, asyncio.Transport):  # a stream server's always is
            return
        close = transport.close

        def closing() -> None:
            """Whoever closes (uvicorn after ``Connection: close``, an error, its keep-alive
            timeout): with answers still unread, the transport stays open until its client
            reads them; that is a wait for a read, with its deadline, and evictable."""
            close()
            if transport.get_write_buffer_size():
                self._wait("read")

        transport.close = closing  # type: ignore[method-assign]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # a connection gone already
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        refusal = self.guard.admit(self)
        if refusal is not None:
            log.warning("refused a connection from %s: %s", self.address, refusal.split(b"\r\n", 1)[0].decode())
            self.drop(refusal)
            return
        self._wait("head")

    def _is_probe(self, data: bytes) -> bool:
        """Whether the request line begun so far can still be a health probe's."""
        self._first_bytes = (self._first_bytes + data)[: max(map(len, PROBE_LINES))]
        return any(line.startswith(self._first_bytes) or self._first_bytes.startswith(line) for line in PROBE_LINES)

    def data_received(self, data: bytes) -> None:
        if self.probe_only and not self._is_probe(data):
            self.drop(_REFUSED)
            return
        before = self.waiting_for()
        # raw bytes, framing included: chunk extensions and trailers reach no body callback
        if self._reading == "body":
            self._body_bytes += len(data)
        else:
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._reading != "body" and self._head_bytes > MAX_HEAD_BYTES:
            self.drop(_TOO_LARGE)
            return
        if self._reading == "body" and self._body_bytes > self.guard.max_body_wire_bytes:
            self.drop()  # the app answers 413 for what it reads; this is what it never sees
            return
        now = self.waiting_for()
        if now is None:
            self._stop_waiting()
        elif now != before:  # a new wait (the head complete, or a dropped body over): from now
            self._wait(now)

    def on_response_complete(self) -> None:
        if self.probe_only:
            self.drop()
        super().on_response_complete()  # type: ignore[misc]  # uvicorn's protocols have it
        waiting = self.waiting_for()
        if not self.transport.is_closing() and waiting in ("head", "body"):
            self._wait(waiting)  # the next head, or the rest of a body answered early (a read runs on)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self.guard.forget(self)
        super().connection_lost(exc)


def protocol_class(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's httptools HTTP protocol (uvicorn[standard] installs httptools) guarded by
    ``guard``."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return type("GuardedHTTPProtocol", (GuardedProtocol, HttpToolsProtocol), {"guard": guard})


def guard_of(settings: Settings) -> ConnectionGuard:
    """A fresh guard with the limits of ``settings``."""
    proxies = tuple(
        ipaddress.ip_network(item.strip(), strict=False)
        for item in settings.forwarded_allow_ips.split(",")
        if item.strip()
    )
    return ConnectionGuard(
        connection_budget(settings.max_connections + PROBE_SLOTS) - PROBE_SLOTS,
        settings.max_connections_per_address,
        settings.request_head_timeout_s,
        settings.request_timeout_s,
        proxies,
        settings.max_body_bytes,
    )


class HeadTooLarge(Exception):
    """A request head past :data:`MAX_HEAD_BYTES`, raised from the parser's callback."""


def connection_budget(wanted: int) -> int:
    """Raise the open-files limit so ``wanted`` connections fit, as far as the hard limit
    allows; return how many connections fit (fewer than ``wanted`` if the limit is too low)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    fits = max(PROBE_SLOTS + 1, soft - RESERVED_FDS)
    log.warning("open-files limit %d (hard %d): serving at most %d connections, not %d", soft, hard, fits, wanted)
    return fits


def bind(settings: Settings) -> socket.socket:
    """The listening socket of ``settings.host:port``; ConfigError naming it if it is taken."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        return socket.create_server((settings.host, settings.port), family=family, backlog=BACKLOG)
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {where} is already in use; stop what listens there, or choose --port") from None
        raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None


def uvicorn_config(app: Any, settings: Settings) -> Any:
    """The one uvicorn configuration every Ringfence HTTP server runs with."""
    import uvicorn

    proxies = settings.forwarded_allow_ips.strip()
    for pem in (settings.tls_cert, settings.tls_key):  # a FIFO there would hang the start, the data dir locked
        if pem is not None:
            regular_input(pem).close()
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_class(guard_of(settings)),
        # X-Forwarded-For/-Proto are believed only from the named proxies: uvicorn's default
        # (127.0.0.1, or $FORWARDED_ALLOW_IPS) would let any local client choose its address
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or "",
        timeout_keep_alive=max(1, round(settings.request_head_timeout_s)),
        backlog=BACKLOG,
        log_config=None,
        access_log=False,
        server_header=False,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        timeout_graceful_shutdown=10,
    )


def event_loop_class(handshake_timeout_s: float) -> type[asyncio.AbstractEventLoop]:
    """asyncio's event loop, whose TLS servers give a handshake ``handshake_timeout_s`` (not
    asyncio's 60 s): uvicorn offers no option for it, and a connection still in its handshake
    is not yet counted by the guard."""

    class HandshakeBoundedLoop(asyncio.SelectorEventLoop):
        async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", handshake_timeout_s)
            return await super().create_server(*args, **kwargs)

    return HandshakeBoundedLoop


def serve(app: Any, settings: Settings, sock: socket.socket, on_stop: Callable[[], None] = lambda: None) -> bool:
    """Serve ``app`` on ``sock`` (from :func:`bind`) until stopped; False if it never started.
    ``on_stop`` is called as the stop begins, before the grace period of requests under way."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            on_stop()
            await super().shutdown(sockets)

    server = Server(uvicorn_config(app, settings))
    freeze_start_up()
    # what uvicorn.Server.run does, with a loop of our own (uvloop is not installed)
    with asyncio.Runner(loop_factory=event_loop_class(settings.request_head_timeout_s)) as runner:
        runner.run(server.serve(sockets=[sock]))
    return bool(server.started)
