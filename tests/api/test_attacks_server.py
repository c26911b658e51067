"""Attacks on the HTTP server itself, against a real ``ringfence up``: connection exhaustion
(idle, slowloris, slow bodies, oversized heads, busy streams, many connections from one
address, stalled TLS handshakes) and forged proxy headers."""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, free_port, start_server
from tests.helpers.tls import self_signed

HEAD_TIMEOUT_S = 2.0
IDLE_CONNECTIONS = 1_100


@contextlib.contextmanager
def serving(tmp_path: Path, **env: str) -> Iterator[EmbeddedServer]:
    server = start_server(tmp_path / "d", env={f"RINGFENCE_{k.upper()}": v for k, v in env.items()})
    try:
        yield server
    finally:
        server.stop()


def port_of(server: EmbeddedServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection to the server from ``source`` (any 127.x.y.z is this machine)."""
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def closed_by_server(sockets: list[socket.socket], within_s: float) -> int:
    """Wait until the server closed each socket (EOF or reset); return how many it closed."""
    selector = selectors.DefaultSelector()
    for s in sockets:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
    closed, deadline = 0, time.monotonic() + within_s
    while closed < len(sockets) and (left := deadline - time.monotonic()) > 0:
        for ready, _ in selector.select(timeout=left):
            sock = ready.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data or b"\r\n\r\n" in data:  # EOF, or the answer before it
                selector.unregister(sock)
                closed += 1
    selector.close()
    return closed


@pytest.fixture
def many_files() -> Iterator[None]:
    """Room in this test process for the connections it opens."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_CONNECTIONS + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the open-files hard limit ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_and_slow_connections_cannot_starve_healthz(tmp_path: Path, many_files: None) -> None:
    with serving(tmp_path, request_head_timeout_s=str(HEAD_TIMEOUT_S)) as server:
        port = port_of(server)
        idle = [connect(port) for _ in range(IDLE_CONNECTIONS)]  # more than max_connections (1,000)
        slow = [connect(port) for _ in range(20)]
        for s in slow:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            for _ in range(5):
                assert httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
            # every connection that sent no complete head is closed once the head timeout is up
            opened = idle + slow
            assert closed_by_server(opened, within_s=HEAD_TIMEOUT_S + 10) == len(opened)
            assert httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
        finally:
            for s in idle + slow:
                s.close()


def trickle_until_closed(s: socket.socket, limit_s: float) -> bool:
    """Send a header line every 0.2 s, never a complete head; True once the server closed."""
    started = time.monotonic()
    s.settimeout(0.2)
    while time.monotonic() - started < limit_s:
        try:
            s.sendall(b"X-A: b\r\n")
            if s.recv(1) == b"":
                return True
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def test_a_head_trickling_in_is_cut_off_at_the_head_timeout(tmp_path: Path) -> None:
    with serving(tmp_path, request_head_timeout_s=str(HEAD_TIMEOUT_S)) as server, connect(port_of(server)) as s:
        started = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert trickle_until_closed(s, limit_s=HEAD_TIMEOUT_S + 10)
        assert time.monotonic() - started < HEAD_TIMEOUT_S + 3


def test_an_idle_keep_alive_connection_is_closed_too(tmp_path: Path) -> None:
    with serving(tmp_path, request_head_timeout_s=str(HEAD_TIMEOUT_S)) as server, connect(port_of(server)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        assert closed_by_server([s], within_s=HEAD_TIMEOUT_S + 5) == 1


def test_an_oversized_request_head_is_refused(tmp_path: Path) -> None:
    with serving(tmp_path) as server, connect(port_of(server)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(100):  # 100 KiB of header lines, never a blank line
                s.sendall(b"X-Pad: " + b"a" * 1016 + b"\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            answer = s.recv(4096)
        assert answer == b"" or answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400"))
        assert closed_by_server([s], within_s=5) == 1


@pytest.mark.parametrize("kib", [40, 120])
def test_an_oversized_request_head_arriving_whole_in_one_read_is_refused_too(tmp_path: Path, kib: int) -> None:
    """A pen test: heads of 40-120 KiB sent in one write were answered 200 (the bytes counted on
    the wire were reset as the request completed within the read)."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (kib * 1024) + b"\r\nConnection: close\r\n\r\n"
    with serving(tmp_path) as server, connect(port_of(server)) as s:
        s.sendall(head)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    with serving(tmp_path) as server, connect(port_of(server)) as s:  # a head just under the limit is served
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 30_000 + b"\r\nConnection: close\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")


def read_all(s: socket.socket) -> bytes:
    return read_until_closed(s)[0]


def read_until_closed(s: socket.socket) -> tuple[bytes, bool]:
    """What the server sent, and whether it closed the connection (False: the socket's timeout)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except TimeoutError:
        return out, False
    except OSError:  # reset
        pass
    return out, True


def test_a_chunked_bodys_trailers_are_never_taken_as_request_headers_and_are_bounded(tmp_path: Path) -> None:
    """A re-test: uvicorn added a chunked body's trailers to the request's headers, which the app
    reads: an Authorization sent only there was believed (200), an X-Forwarded-For there would
    be, and 8 MB of small trailers held 190 MB a connection."""
    data_dir = tmp_path / "d"
    key = create_key(data_dir, "reader", "alerts:read")
    with serving(tmp_path) as server:
        with connect(port_of(server)) as s:
            s.settimeout(10)
            s.sendall(
                b"GET /v1/alerts?limit=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                b"0\r\nAuthorization: Bearer " + key.encode() + b"\r\n\r\n"
            )
            assert read_all(s).startswith(b"HTTP/1.1 401"), "a key in a trailer was believed"
        with connect(port_of(server)) as s:  # the same key in the head is served
            s.settimeout(10)
            s.sendall(
                b"GET /v1/alerts?limit=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\nX-Note: kept out\r\n\r\n"
            )
            assert read_all(s).startswith(b"HTTP/1.1 200")
        with connect(port_of(server)) as s:  # 100 KiB of trailers: cut off past 32 KiB
            s.settimeout(10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
            with contextlib.suppress(OSError):
                for _ in range(100):
                    s.sendall(b"X-T: " + b"a" * 1019 + b"\r\n")
            answer, closed = read_until_closed(s)
            # the server closes the connection: with a 431, or with nothing more when it had
            # answered the head before the trailers grew (a race of who reads first)
            assert closed, "100 KiB of trailers were read on"
            assert answer == b"" or answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 200")), answer[:200]
            assert answer.count(b"HTTP/1.1") <= 1, answer[:400]
        with connect(port_of(server)) as s:  # the same once the head has been answered
            s.settimeout(10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            with contextlib.suppress(OSError):
                for _ in range(100):
                    s.sendall(b"X-T: " + b"a" * 1019 + b"\r\n")
            answer, closed = read_until_closed(s)
            assert closed, "100 KiB of trailers were read on"
            assert b"HTTP/1.1" not in answer, answer[:200]
        assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_past_max_connections_of_busy_requests_a_new_one_is_refused_with_503(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    key = create_key(data_dir, "reader", "alerts:read")
    with serving(tmp_path, max_connections="3") as server:
        streams = [connect(port_of(server)) for _ in range(3)]
        try:
            for s in streams:  # three live alert streams: three busy connections
                s.sendall(
                    b"GET /v1/alerts/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() + b"\r\n\r\n"
                )
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
            with connect(port_of(server)) as extra:  # let in for a health probe only
                extra.sendall(b"GET /v1/alerts HTTP/1.1\r\nHost: x\r\n\r\n")
                assert extra.recv(4096).startswith(b"HTTP/1.1 503")
            with connect(port_of(server)) as probe:
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert probe.recv(4096).startswith(b"HTTP/1.1 200")
                assert closed_by_server([probe], within_s=5) == 1  # one probe per connection
        finally:
            for s in streams:
                s.close()
        deadline = time.monotonic() + 10  # the streams' slots come back
        while httpx.get(f"{server.url}/healthz", timeout=2).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_rotating_x_forwarded_for_does_not_escape_the_failed_auth_limit(tmp_path: Path) -> None:
    with serving(tmp_path, auth_failures_per_min="5") as server:
        statuses = [
            httpx.get(
                f"{server.url}/v1/alerts",
                headers={"Authorization": "Bearer rf_wrong", "X-Forwarded-For": f"198.51.100.{i}"},
            ).status_code
            for i in range(12)
        ]
    assert statuses[0] == 401
    assert 429 in statuses, statuses


def test_x_forwarded_proto_over_plain_http_does_not_turn_on_hsts(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        response = httpx.get(f"{server.url}/healthz", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 200
    assert "strict-transport-security" not in response.headers


def test_forwarded_headers_are_believed_from_a_configured_proxy(tmp_path: Path) -> None:
    with serving(tmp_path, forwarded_allow_ips="127.0.0.1") as server:
        response = httpx.get(f"{server.url}/healthz", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" in response.headers


# -- slow request bodies, connections per address, TLS handshakes --------------------------------

SLOW_SIGN_IN = b"POST /v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"


def answer_of(s: socket.socket) -> bytes:
    with contextlib.suppress(ConnectionResetError):
        return s.recv(4096)
    return b""


def test_slow_sign_in_bodies_neither_fill_the_server_nor_starve_healthz(tmp_path: Path) -> None:
    """Anonymous ``POST /v1/session`` heads with a body that never completes: each is evictable
    (the oldest makes room) and cut off at the short deadline of a small body."""
    settings = {
        "max_connections": "10",
        "request_head_timeout_s": str(HEAD_TIMEOUT_S),
        "signin_attempts_per_min": "1000",
    }
    with serving(tmp_path, **settings) as server:
        slow = []
        try:
            for _ in range(30):  # three times max_connections, all from one address
                s = connect(port_of(server))
                s.sendall(SLOW_SIGN_IN)
                slow.append(s)
            for _ in range(5):
                assert httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
            assert closed_by_server(slow, within_s=HEAD_TIMEOUT_S + 5) == len(slow)
        finally:
            for s in slow:
                s.close()


def test_a_large_body_trickling_in_is_cut_off_at_the_request_timeout(tmp_path: Path) -> None:
    key = create_key(tmp_path / "d", "producer", "events:write")
    with serving(tmp_path, request_timeout_s="3") as server, connect(port_of(server)) as s:
        started = time.monotonic()
        s.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n\r\n["
        )
        s.settimeout(0.3)
        answer = b""
        while time.monotonic() - started < 15 and not answer:
            try:
                s.sendall(b" ")
                answer = s.recv(4096) or b"<closed>"
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                answer = b"<closed>"
        assert answer.startswith((b"HTTP/1.1 408", b"<closed>")), answer
        assert time.monotonic() - started < 3 + 3


def ndjson_events(count: int) -> bytes:
    """``count`` valid login events, one a line (about 190 bytes each)."""
    return b"".join(
        b'{"event_id":"early-%d","type":"login.succeeded","occurred_at":"2026-01-01T00:00:00Z","source":"app",'
        b'"customer_id":"c%d","data":{"ip":"198.51.100.7","device_id":"d%d"}}\n' % (i, i, i)
        for i in range(count)
    )


def read_response(s: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length from ``s``: its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65_536)
        assert chunk, f"the server closed the connection after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = s.recv(65_536)
        assert chunk, "the server closed the connection in a response body"
        body += chunk
    return int(head.split(b" ")[1]), body


def post(body: bytes, key: str) -> bytes:
    return (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (key.encode(), len(body), body)
    )


def test_a_request_answered_before_its_body_keeps_its_connection_for_the_next_one(tmp_path: Path) -> None:
    """A producer's large batch answered before it was read (a wrong key here; 503 under
    backpressure is the same path) gets that answer, and the same connection serves the next
    request: not 431 (the unread body counted as a request head) nor a reset."""
    key = create_key(tmp_path / "d", "producer", "events:write")
    body = ndjson_events(5_000)
    assert len(body) > 20 * 32 * 1024
    some = body[: body.index(b"\n", 4_000) + 1]
    with serving(tmp_path) as server, connect(port_of(server)) as s:
        s.settimeout(10)
        for _ in range(3):
            s.sendall(post(body, "rf_wrong"))
            assert read_response(s)[0] == 401
            s.sendall(post(some, key))
            status, answer = read_response(s)
            assert status == 202, answer


@pytest.mark.parametrize(
    ("framing", "rest"),
    [
        (b"Content-Length: 1000000000", b"x" * 65_536),
        # what the parser hands no body callback: a last chunk, then trailer lines without end
        (b"Transfer-Encoding: chunked", b"X-Trailer: " + b"a" * 65_000 + b"\r\n"),
    ],
    ids=["content-length", "chunked-trailers"],
)
def test_an_unread_body_past_max_body_bytes_closes_its_connection(tmp_path: Path, framing: bytes, rest: bytes) -> None:
    """The rest of a body answered early is read and dropped only up to ``max_body_bytes``
    (and some framing), counted on the wire: a client that keeps sending after its answer
    is cut off, not read for ever, long before its deadline."""
    with serving(tmp_path, max_body_bytes="1048576", request_timeout_s="60") as server, connect(port_of(server)) as s:
        s.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            + framing
            + b"\r\nAuthorization: Bearer rf_wrong\r\n\r\n"
            + (b"1\r\nx\r\n0\r\n" if b"chunked" in framing else b"")
        )
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 401")
        started, chunk, cut_off = time.monotonic(), rest, False
        while not cut_off and time.monotonic() - started < 20:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
        assert cut_off, "the server went on reading an answered body"


def test_connections_per_address_are_capped_and_another_address_is_still_served(tmp_path: Path) -> None:
    key = create_key(tmp_path / "d", "viewer", "alerts:read")
    settings = {"max_connections_per_address": "5", "request_head_timeout_s": "30", "max_streams_per_key": "10"}
    with serving(tmp_path, **settings) as server:
        port = port_of(server)
        idle = [connect(port) for _ in range(10)]
        busy: list[socket.socket] = []
        try:
            # idle connections of the address make room for its newer ones: half are closed now,
            # long before the head timeout
            assert closed_by_server(idle, within_s=5) == 5
            for _ in range(5):  # five live streams: five busy connections from 127.0.0.1
                s = connect(port)
                s.sendall(
                    b"GET /v1/alerts/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() + b"\r\n\r\n"
                )
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
                busy.append(s)
            with connect(port) as sixth:
                assert answer_of(sixth).startswith(b"HTTP/1.1 429")
            with connect(port, source="127.0.0.2") as other:  # another client is still served
                other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert other.recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            for s in idle + busy:
                s.close()


def test_a_stalled_tls_handshake_is_cut_off_at_the_head_timeout(tmp_path: Path) -> None:
    cert, tls_key = self_signed(tmp_path)
    data_dir = tmp_path / "d"
    port = free_port()
    env = {
        "RINGFENCE_TLS_CERT": str(cert),
        "RINGFENCE_TLS_KEY": str(tls_key),
        "RINGFENCE_REQUEST_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
    }
    data_dir.mkdir(mode=0o700)
    process = subprocess.Popen(
        [sys.executable, "-m", "ringfence", "up", "--data-dir", str(data_dir), "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context).status_code == 200
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with connect(port) as stalled:  # TCP open, no ClientHello
            started = time.monotonic()
            assert closed_by_server([stalled], within_s=HEAD_TIMEOUT_S + 10) == 1
            assert time.monotonic() - started < HEAD_TIMEOUT_S + 3
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize(
    ("requests", "last"),
    [
        (1000, b""),  # answers past every buffer: writing pauses
        (184, b"Connection: close\r\n"),  # fewer (some 1.6 MB), then closed by the server with answers unread
    ],
)
def test_clients_that_do_not_read_their_answers_neither_hold_the_server_nor_keep_their_connections(
    tmp_path: Path, requests: int, last: bytes
) -> None:
    """Found by a hostile test: connections pipelining requests and never reading the answers
    held every slot (each a response being written: busy, never closed), so every other client
    got 503; and (found by a review) a connection closed with answers still unread stayed open
    until its client read them. Such a connection waits for its client to read: the first
    closed to make room, and closed after request_timeout_s."""
    data_dir = tmp_path / "d"
    key = create_key(data_dir, "reader", "alerts:read")
    asset = b"GET /static/app.css HTTP/1.1\r\nHost: x\r\n"
    with serving(tmp_path, max_connections="10", request_timeout_s="3") as server:
        stalled = []
        for _ in range(10):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.connect(("127.0.0.1", port_of(server)))
            s.sendall((asset + b"\r\n") * (requests - 1) + asset + last + b"\r\n")  # never read
            stalled.append(s)
        try:
            deadline = time.monotonic() + 20
            while True:  # room is made, at the latest once their deadline is up: never 503 for good
                answered = httpx.get(f"{server.url}/v1/alerts", headers={"Authorization": f"Bearer {key}"}, timeout=10)
                if answered.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert answered.status_code == 200
            time.sleep(3 + 3)  # past request_timeout_s: the rest are cut off
            for s in stalled:  # cut off: what was sent before ends, short of every answer
                s.settimeout(5)
                received = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := s.recv(1 << 20):
                        received += chunk
                if not last:  # else all may have fitted in the buffers before the close
                    assert received.count(b"HTTP/1.1 200") < requests
        finally:
            for s in stalled:
                s.close()
