"""Attacks on access over real HTTP (issue 15, items 7, 8, 9, 14 and 15): sign-in at speed,
an audience-limited key reading other desks' data, a live stream outliving its key or session,
streams held open without bound by one key (item 4), sign-in bodies read before the limit,
crafted digits in every integer parameter, and a customer's events pushed out of their own page."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ringfence.alerts.silences import MAX_CURRENT_SILENCES
from ringfence.bench.servers import EmbeddedServer, create_key, ringfence_cli, start_server
from ringfence.config import DEFAULT_PARTITIONS
from ringfence.events.model import Event
from ringfence.log.base import partition_of_key
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.runtimes.embedded.platform import STORE_FILE
from ringfence.store import SqliteStore
from ringfence.store.silences import SqlSilenceStore
from ringfence.testing import event
from tests.helpers.http import post, risky_transfer, uid

OPENAPI = Path(__file__).resolve().parents[2] / "src" / "ringfence" / "api" / "openapi.json"
DEFAULT_PACK = Path(__file__).resolve().parents[2] / "src" / "ringfence" / "rules" / "default.yaml"
CUSTOM_TYPE = "p2p.payment"
SIGNIN_PER_MIN = 5
YAML = {"Content-Type": "application/yaml"}


@dataclass
class Keys:
    admin: str
    producer: str
    analyst: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A server whose pack declares a custom type, with a low sign-in limit."""
    root = tmp_path_factory.mktemp("access")
    pack = root / "pack.yaml"
    text = DEFAULT_PACK.read_text()
    pack.write_text(text.replace("state_ttl: 400d\n", f"state_ttl: 400d\ntypes: [{CUSTOM_TYPE}]\n", 1))
    env = {
        "RINGFENCE_RULE_PACK": str(pack),
        "RINGFENCE_SIGNIN_ATTEMPTS_PER_MIN": str(SIGNIN_PER_MIN),
        "RINGFENCE_AUTH_FAILURES_PER_MIN": "1000",
    }
    srv = start_server(root / "data", env=env)
    yield srv
    assert srv.stop(), srv.log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
def keys(server: EmbeddedServer) -> Keys:
    return Keys(
        admin=create_key(server.data_dir, "admin", "admin"),
        producer=create_key(server.data_dir, "producer", "events:write"),
        analyst=role_key(server, "analyst", "analyst"),
    )


def in_an_hour() -> str:
    return datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()


def role_key(server: EmbeddedServer, name: str, role: str, *audiences: str) -> str:
    args = ["keys", "create", "--name", name, "--role", role]
    for audience in audiences:
        args += ["--audience", audience]
    return ringfence_cli(*args, data_dir=server.data_dir).stdout.strip().splitlines()[-1]


def client_from(server: EmbeddedServer, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z reaches the server)."""
    return httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address=address), timeout=30)


# -- item 7: sign-in is limited per address and per key ------------------------------------------


def test_sign_in_attempts_are_limited_per_address_and_per_key(server: EmbeddedServer, keys: Keys) -> None:
    first, second = role_key(server, uid("first"), "viewer"), role_key(server, uid("second"), "viewer")
    with client_from(server, "127.0.0.2") as one:
        statuses = [one.post("/v1/session", json={"key": first}).status_code for _ in range(SIGNIN_PER_MIN)]
        assert statuses == [201] * SIGNIN_PER_MIN  # successful sign-ins count too
        limited = one.post("/v1/session", json={"key": second})
        assert limited.status_code == 429  # this address is out, whatever the key
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"
    with client_from(server, "127.0.0.3") as other:
        assert other.post("/v1/session", json={"key": first}).status_code == 429  # the key is out, from anywhere
        assert other.post("/v1/session", json={"key": second}).status_code == 201
    # wrong secrets naming a key's (public) id, from many addresses, do not lock its owner out
    # (a pen test: they were counted against the key, and its owner got 429)
    target = role_key(server, uid("target"), "viewer")
    wrong = target[:-6] + ("AAAAAA" if not target.endswith("AAAAAA") else "BBBBBB")
    answers = []
    for n in range(SIGNIN_PER_MIN + 1):
        with client_from(server, f"127.0.1.{n + 1}") as guesser:
            answers.append(guesser.post("/v1/session", json={"key": wrong}).status_code)
    assert answers == [401] * (SIGNIN_PER_MIN + 1)
    with client_from(server, "127.0.2.1") as owner:
        assert owner.post("/v1/session", json={"key": target}).status_code == 201
    assert httpx.get(f"{server.url}/healthz").status_code == 200


# -- item 8: an audience-limited key reads no raw data of other desks ------------------------------


def test_a_key_limited_to_audiences_neither_gets_nor_uses_the_scopes_that_span_every_desk(
    server: EmbeddedServer, keys: Keys
) -> None:
    """A pen test: a key of the aml desk with rules:write moved the fraud desk's detections to
    its own audience (PUT /v1/rules), and one with admin read every desk's decisions in the
    audit trail. Such keys are refused when created, and one made before is refused its use."""
    for scopes in (["--scope", "rules:write"], ["--role", "admin"]):
        made = ringfence_cli(
            "keys", "create", "--name", uid("aml"), *scopes, "--audience", "aml", data_dir=server.data_dir, check=False
        )
        assert made.returncode != 0
        assert "a key limited to audiences cannot have" in made.stderr, made.stderr
    older = {scope: create_key(server.data_dir, uid(scope.split(":")[0]), scope) for scope in ("rules:write", "admin")}
    with sqlite3.connect(server.data_dir / STORE_FILE, timeout=30) as store:  # as a key made before the check
        for key in older.values():
            store.execute("UPDATE api_keys SET audiences = 'aml' WHERE key_id = ?", (key.split("_")[1],))
    pack = DEFAULT_PACK.read_text().replace("state_ttl: 400d\n", f"state_ttl: 400d\ntypes: [{CUSTOM_TYPE}]\n", 1)
    calls: list[tuple[str, str, str, dict[str, Any]]] = [
        (
            "rules:write",
            "PUT",
            "/v1/rules",
            {"content": pack.replace("audience: fraud", "audience: aml"), "headers": YAML},
        ),
        ("rules:write", "POST", "/v1/rules/validate", {"content": pack, "headers": YAML}),
        ("rules:write", "PUT", "/v1/lists/high_risk_countries", {"json": {"values": ["XX"]}}),
        ("rules:write", "PUT", "/v1/fx/rates", {"json": {"rates": []}}),
        ("admin", "GET", "/v1/audit", {}),
        ("admin", "GET", "/v1/quarantine", {}),
        ("admin", "PUT", "/v1/rules", {"content": pack, "headers": YAML}),
        # and every other scope, which admin grants (a re-test: ingest took its events)
        ("admin", "POST", "/v1/events", {"json": [event("login.succeeded", at=time.time(), source="web")]}),
        ("admin", "GET", "/v1/alerts", {}),
    ]
    for scope, method, path, request in calls:
        with server.client(older[scope]) as limited:
            answer = limited.request(method, path, **request)
        assert answer.status_code == 403, (scope, method, path, answer.text)
        assert answer.json()["error"]["details"] == {"required_scope": "all audiences"}
    with server.client(keys.admin) as admin:  # nothing changed
        assert "XX" not in admin.get("/v1/lists/high_risk_countries").json()["values"]


def test_an_audience_limited_key_reads_no_features_late_events_silences_or_customer_events(
    server: EmbeddedServer, keys: Keys
) -> None:
    customer = uid("cus")
    late = event("login.succeeded", customer_id=customer, at=time.time() - 3600)
    assert post(server, keys.producer, [risky_transfer(customer), late]).status_code == 202
    server.wait_processed(keys.admin)
    with server.client(keys.admin) as c:
        silence = {"matchers": [f"customer_id={customer}"], "ends_at": in_an_hour(), "comment": "test"}
        assert c.post("/v1/silences", json=silence).status_code == 201
    fraud_desk = role_key(server, uid("fraud"), "analyst", "fraud")
    paths = (
        f"/v1/customers/{customer}/features",
        f"/v1/customers/{customer}/events",
        "/v1/events/late",
        "/v1/silences",
        "/v1/notifications",
    )
    with server.client(fraud_desk) as limited, server.client(keys.analyst) as everyone:
        for path in paths:
            refused = limited.get(path)
            assert refused.status_code == 403, (path, refused.text)
            assert customer not in refused.text
            assert everyone.get(path).status_code == 200, path
        assert customer in everyone.get("/v1/silences").text
        assert customer in everyone.get("/v1/events/late", params={"limit": 1000}).text


def test_current_silences_are_bounded(tmp_path: Path) -> None:
    """Every alert is matched against every current silence: a key may not add them without end."""
    data_dir = tmp_path / "d"
    admin = create_key(data_dir, "admin", "admin")
    store = SqliteStore(data_dir / STORE_FILE)  # all but the last few made here: 1,000 audited requests took a minute
    now = time.time()
    for _ in range(MAX_CURRENT_SILENCES - 5):
        SqlSilenceStore(store).create_silence(["rule_id=x"], now, now + 3600, "key:admin", "bulk", now)
    store.close()
    srv = start_server(data_dir)
    try:
        body = {"matchers": ["rule_id=x"], "ends_at": in_an_hour(), "comment": "bulk"}
        with srv.client(admin) as c:
            created = [c.post("/v1/silences", json=body).status_code for _ in range(5)]
            assert created == [201] * 5
            refused = c.post("/v1/silences", json=body)
            assert refused.status_code == 409
            assert refused.json()["error"]["code"] == "too_many_silences"
            one = c.get("/v1/silences").json()["items"][0]["id"]
            assert c.delete(f"/v1/silences/{one}").status_code == 200  # an expired one makes room
            assert c.post("/v1/silences", json=body).status_code == 201
            listed, cursor = [], None
            while True:  # and they are listed a bounded page at a time
                page = c.get("/v1/silences", params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
                assert len(page["items"]) <= 100
                listed += [s["id"] for s in page["items"]]
                if not (cursor := page["next_cursor"]):
                    break
            assert len(listed) == len(set(listed)) == MAX_CURRENT_SILENCES + 1
            assert len(c.get("/v1/silences").json()["items"]) == 100
            for params in ({"limit": 101}, {"limit": 0}, {"cursor": "x"}):
                refused = c.get("/v1/silences", params=params)
                assert refused.status_code == 400, params
    finally:
        assert srv.stop()


# -- item 9: a live stream ends when its key or session does -------------------------------------


@dataclass
class Listener:
    """Reads ``/v1/alerts/stream`` in a thread; ``ended`` is set when the server closes it."""

    server: EmbeddedServer
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    stop_at: str = ""  # the client hangs up after a line holding this (else the server must close)
    lines: list[str] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Listener:
        threading.Thread(target=self._run, daemon=True).start()
        assert self.connected.wait(10), self.lines
        return self

    def _run(self) -> None:
        try:
            with (
                httpx.Client(base_url=self.server.url, cookies=self.cookies) as client,
                client.stream("GET", "/v1/alerts/stream", headers=self.headers, timeout=httpx.Timeout(5, read=20)) as r,
            ):
                assert r.status_code == 200
                for line in r.iter_lines():
                    self.lines.append(line)
                    self.connected.set()
                    if self.stop_at and self.stop_at in line:
                        return
            self.ended.set()
        except httpx.ReadTimeout:
            self.lines.append("<still open after 20 s>")

    def last_event(self) -> list[str]:
        return [line for line in self.lines if line][-2:]

    def alert_lines(self, customer: str) -> list[str]:
        return [line for line in self.lines if line.startswith("data:") and customer in line]


def sign_in(server: EmbeddedServer, key: str) -> tuple[str, str]:
    """A browser session: its cookie value and CSRF token (from its own address, for the limit)."""
    with client_from(server, "127.0.2.1") as browser:
        response = browser.post("/v1/session", json={"key": key})
    assert response.status_code == 201, response.text
    cookie = response.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    return cookie, response.json()["csrf_token"]


def test_a_stream_ends_when_its_key_is_revoked_and_sends_nothing_after(server: EmbeddedServer, keys: Keys) -> None:
    name = uid("watcher")
    watcher = role_key(server, name, "viewer")
    listener = Listener(server, headers={"Authorization": f"Bearer {watcher}"}).start()
    ringfence_cli("keys", "revoke", name, data_dir=server.data_dir)
    customer = uid("cus")
    post(server, keys.producer, risky_transfer(customer))  # an alert after the revocation
    assert listener.ended.wait(8), listener.lines
    assert listener.last_event() == ["event: closed", 'data: {"reason": "the key was revoked or the session ended"}']
    assert listener.alert_lines(customer) == []


def test_a_stream_ends_when_its_session_signs_out(server: EmbeddedServer) -> None:
    cookie, csrf = sign_in(server, role_key(server, uid("browser"), "viewer"))
    listener = Listener(server, cookies={"rf_session": cookie}).start()
    with httpx.Client(base_url=server.url, cookies={"rf_session": cookie}) as browser:
        assert browser.delete("/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert listener.ended.wait(8), listener.lines
    assert listener.last_event()[0] == "event: closed"


def test_a_stream_ends_when_its_session_expires(server: EmbeddedServer) -> None:
    cookie, _ = sign_in(server, role_key(server, uid("browser"), "viewer"))
    listener = Listener(server, cookies={"rf_session": cookie}).start()
    with sqlite3.connect(server.data_dir / STORE_FILE, timeout=30) as store:  # as if eight hours went by
        store.execute("UPDATE sessions SET expires_at = 1")
    assert listener.ended.wait(8), listener.lines
    assert listener.last_event()[0] == "event: closed"


def test_a_stream_with_a_live_key_stays_open_and_delivers(server: EmbeddedServer, keys: Keys) -> None:
    customer = uid("cus")
    listener = Listener(server, headers={"Authorization": f"Bearer {keys.analyst}"}, stop_at=customer).start()
    post(server, keys.producer, risky_transfer(customer))
    deadline = time.monotonic() + 15
    while not listener.alert_lines(customer):
        assert time.monotonic() < deadline, listener.lines
        time.sleep(0.1)
    assert not listener.ended.is_set()


# -- item 4: one key holds a bounded number of live streams; sign-in is limited before its body ---

MAX_STREAMS = 5  # the default max_streams_per_key


def open_stream(server: EmbeddedServer, credential: str) -> socket.socket:
    """A live alert stream over a raw connection (``credential`` is a header line)."""
    s = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10)
    s.sendall(b"GET /v1/alerts/stream HTTP/1.1\r\nHost: x\r\n" + credential.encode() + b"\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    return s


def try_stream(server: EmbeddedServer, key: str) -> httpx.Response:
    """Open a stream and hang up at once: its answer (200, or the refusal)."""
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/v1/alerts/stream", headers={"Authorization": f"Bearer {key}"}) as response,
    ):
        return response


def wait_stream_allowed(server: EmbeddedServer, key: str, within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while (status := try_stream(server, key).status_code) != 200:
        assert status == 429, status
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_key_holds_at_most_five_streams_and_a_client_leaving_frees_one(server: EmbeddedServer) -> None:
    viewer = role_key(server, uid("viewer"), "viewer")
    streams = [open_stream(server, f"Authorization: Bearer {viewer}") for _ in range(MAX_STREAMS)]
    try:
        refused = try_stream(server, viewer)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        other = role_key(server, uid("other"), "viewer")
        assert try_stream(server, other).status_code == 200  # another key is not limited by this one's
        streams.pop().close()  # the client leaves: its slot comes back
        wait_stream_allowed(server, viewer)
    finally:
        for s in streams:
            s.close()


def test_a_sessions_streams_count_for_its_key_and_are_freed_when_it_signs_out(server: EmbeddedServer) -> None:
    viewer = role_key(server, uid("viewer"), "viewer")
    with client_from(server, "127.0.3.2") as browser:
        signed_in = browser.post("/v1/session", json={"key": viewer})
    assert signed_in.status_code == 201, signed_in.text
    cookie = signed_in.headers["set-cookie"].split(";")[0]
    streams = [open_stream(server, f"Cookie: {cookie}") for _ in range(MAX_STREAMS)]
    try:
        assert try_stream(server, viewer).status_code == 429  # the session's streams are the key's
        with httpx.Client(base_url=server.url, headers={"Cookie": cookie}) as c:
            assert c.delete("/v1/session", headers={"X-CSRF-Token": signed_in.json()["csrf_token"]}).status_code == 204
        wait_stream_allowed(server, viewer)  # the streams closed on sign-out gave their slots back
    finally:
        for s in streams:
            s.close()


def test_the_address_sign_in_limit_is_charged_before_the_body_is_read(server: EmbeddedServer) -> None:
    address = "127.0.3.1"
    with client_from(server, address) as client:
        for _ in range(SIGNIN_PER_MIN):
            client.post("/v1/session", json={"key": "rf_wrong"})
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=3, source_address=(address, 0)) as s:
        s.sendall(
            b"POST /v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 429")  # at once, not after waiting for the body


# -- item 14: crafted digits are a 400 in every integer parameter, never a 500 --------------------

HOSTILE_INTEGERS = (
    "²",  # "²".isdigit() is True, int("²") raises
    "¹²",
    "١٢",  # Arabic-Indic digits: int() takes them, but they are not what the API documents
    "\uff11\uff12",  # full-width "12"
    "+5",
    "-5",
    " 5",
    "5 ",
    "5\t",
    "5\n",
    "1_0",
    "0x10",
    "1e3",
    "5.0",
    "",
    "9" * 5000,  # int() refuses more than 4300 digits
    str(2**64),
    "0" * 40 + "1",
)


def integer_query_parameters() -> list[tuple[str, str, str]]:
    """(method, path, parameter) of every integer query parameter in the OpenAPI document, and
    every cursor (an opaque one too: digits no store gave out are refused as well)."""
    found = []
    for path, operations in json.loads(OPENAPI.read_text())["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                numeric = schema.get("type") == "integer" or schema.get("pattern", "").startswith("^[0-9]")
                numeric = numeric or parameter["name"] == "cursor"
                if parameter["in"] == "query" and numeric:
                    found.append((method.upper(), path, parameter["name"]))
    return found


def test_the_document_lists_the_integer_parameters_of_the_issue() -> None:
    named = {(path, name) for _, path, name in integer_query_parameters()}
    assert {
        ("/v1/alerts", "limit"),
        ("/v1/alerts", "cursor"),
        ("/v1/audit", "cursor"),
        ("/v1/events/late", "limit"),
        ("/v1/notifications", "cursor"),
        ("/v1/silences", "cursor"),
        ("/v1/customers/{customer_id}/events", "limit"),
    } <= named


@pytest.mark.parametrize(("method", "path", "name"), integer_query_parameters())
def test_crafted_digits_in_an_integer_parameter_are_a_400(
    server: EmbeddedServer, keys: Keys, method: str, path: str, name: str
) -> None:
    url = path.replace("{customer_id}", "cus_1")
    with server.client(keys.admin) as c:
        for value in HOSTILE_INTEGERS:
            response = c.request(method, url, params={name: value}, content=b"version: x", headers=YAML)
            assert response.status_code == 400, (value[:20], response.text)
            assert response.json()["error"]["details"] in ({"parameter": name}, None), response.text
        twice = c.request(method, url, params=[(name, "1"), (name, "2")], content=b"version: x", headers=YAML)
        assert twice.status_code == 400  # a repeated parameter is refused, not resolved by guessing


def test_control_characters_in_ids_and_non_rfc3339_times_are_refused(server: EmbeddedServer, keys: Keys) -> None:
    with server.client(keys.admin) as c:
        assert c.get("/v1/alerts", params={"customer_id": "cus\x00"}).status_code == 400
        assert c.get("/v1/alerts", params={"rule_id": "a\r\nb"}).status_code == 400
        assert c.get("/v1/alerts/al%00x").status_code == 404  # an id that cannot exist is not found
        assert c.get("/v1/customers/cus%00/events").status_code == 400
        assert c.get("/v1/alerts", params={"since": "\uff12\uff10\uff12\uff16-01-01T00:00:00Z"}).status_code == 400
        assert c.get("/v1/alerts", params={"since": "2026-W01-1T00:00:00Z"}).status_code == 400  # not RFC 3339
        assert c.get("/v1/alerts", params={"since": "2026-01-01T00:00:00Z"}).status_code == 200


@pytest.fixture(scope="module")
def signed_producer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, str]]:
    """A server and a producer key that must sign its requests (Ed25519)."""
    root = tmp_path_factory.mktemp("signed")
    private = ed25519.Ed25519PrivateKey.generate()
    pem = root / "producer.pub"
    pem.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    args = ("keys", "create", "--name", "signed", "--scope", "events:write", "--signing-key", str(pem))
    key = ringfence_cli(*args, data_dir=root / "data").stdout.strip().splitlines()[-1]
    srv = start_server(root / "data")
    yield srv, key
    assert srv.stop()


@pytest.mark.parametrize("timestamp", [b"\xb2", b"\xb3\xb9", "9" * 5000, "+1", "1_7", "0x10"])
def test_crafted_digits_in_the_signature_timestamp_are_a_401(
    signed_producer: tuple[EmbeddedServer, str], timestamp: bytes | str
) -> None:
    server, key = signed_producer
    headers: list[tuple[str, str | bytes]] = [
        ("Authorization", f"Bearer {key}"),
        ("Content-Type", "application/json"),
        ("X-Ringfence-Signature", "ed25519=AAAA"),
        ("X-Ringfence-Timestamp", timestamp),  # b"\xb2" reaches the server as "²" (headers are Latin-1)
    ]
    response = httpx.post(f"{server.url}/v1/events", content=json.dumps([event()]).encode(), headers=headers)
    assert response.status_code == 401, response.text
    assert "window" in response.json()["error"]["message"]


# -- item 15: a customer's events are found whatever else the partition holds ----------------------


def naming_event(customer: str, named: str) -> dict[str, Any]:
    """A custom event of ``customer`` whose data holds ``"customer_id": named`` (a P2P payee)."""
    body = event(CUSTOM_TYPE, customer_id=customer)
    body["data"] = {"customer_id": named, "note": "p2p"}
    return body


def test_other_customers_events_do_not_push_a_customers_own_out_of_the_page(server: EmbeddedServer, keys: Keys) -> None:
    victim = uid("cus")
    partitions = DEFAULT_PARTITIONS  # the server's
    home = partition_of_key(victim, partitions)
    neighbours = [c for c in (f"{victim}-n{i}" for i in range(400)) if partition_of_key(c, partitions) == home]
    own = [event("login.succeeded", customer_id=victim) for _ in range(3)]
    # newer events of other customers in the same partition, whose data name the victim
    naming = [naming_event(neighbours[i % len(neighbours)], victim) for i in range(60)]
    response = post(server, keys.producer, [*own, *naming])
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 63, response.text
    with server.client(keys.admin) as c:
        page = c.get(f"/v1/customers/{victim}/events", params={"limit": 3}).json()
    assert [i["event"]["event_id"] for i in page["items"]] == [e["event_id"] for e in reversed(own)]


def test_the_journal_filters_by_customer_before_the_limit_and_keeps_its_scan_bound(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "journal.sqlite3", partitions=1)

    def ev(n: int, customer: str, **data: Any) -> Event:
        return Event(event_id=f"e{n}", type=CUSTOM_TYPE, occurred_at=1.0, source="s", data=data, customer_id=customer)

    try:
        log.append([ev(0, "victim"), ev(1, "victim")], 1.0)
        log.append([ev(n, f"other{n}", customer_id="victim") for n in range(2, 502)], 1.0)  # nested, same needle
        log.append([ev(n, "victim-2") for n in range(502, 602)], 1.0)  # a longer id with the same prefix
        records, lowest = log.recent_of_customer("victim", 2, 10_000)
        assert [r.offset for r in records] == [2, 1]
        assert lowest == 1
        records, lowest = log.recent_of_customer("victim", 2, 500)  # only the latest 500 offsets are searched
        assert records == []
        assert lowest == 103
    finally:
        log.close()


# -- issue 16 item 3: an audience-limited key sees no other desk's counts ---------------------------


def test_a_fraud_limited_key_sees_no_security_counts_anywhere(server: EmbeddedServer, keys: Keys) -> None:
    """``/v1/stats`` and ``/metrics`` count every desk's alerts (403 for a limited key, with no
    figure in the refusal); ``GET /v1/rules`` shows no hit count of a desk the key does not see."""
    customer = uid("cus")
    failures = [event("login.failed", customer_id=customer, ip="203.0.113.9") for _ in range(6)]
    assert post(server, keys.producer, failures).status_code == 202
    server.wait_processed(keys.admin)
    fraud_desk = role_key(server, uid("fraud"), "analyst", "fraud")
    with server.client(keys.admin) as admin:
        hits = {d["id"]: d["hits"] for d in admin.get("/v1/rules").json()["detections"]}
        assert sum(hits["login_failed_burst"].values()) >= 1  # there is a security count to hide
        assert 'ringfence_alerts_total{audience="security"' in admin.get("/metrics").text
        assert admin.get("/v1/stats").json()["totals"]["alerts"] >= 1
    with server.client(fraud_desk) as limited:
        for path in ("/v1/stats", "/metrics"):
            refused = limited.get(path)
            assert refused.status_code == 403, (path, refused.text)
            assert "security" not in refused.text
            assert "alerts_total" not in refused.text
        detections = limited.get("/v1/rules").json()["detections"]
    for d in detections:
        counts = (d["hits"], d["hits_last_hour"], d["hits_last_day"])
        if d["audience"] == "fraud":
            assert all(isinstance(c, dict) for c in counts), d
        else:
            assert counts == (None, None, None), d
    assert {d["id"] for d in detections} == set(hits)  # the rules are listed (the pack text shows them)


def test_a_key_whose_characters_read_as_an_account_number_signs_in(
    server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found on review: the sign-in body was masked like people's text, and a key's random
    characters read as an IBAN about once in 576 keys: that key could never sign in."""
    from ringfence.runtimes.embedded.platform import open_store
    from ringfence.store import keys as keys_module
    from ringfence.store.keys import ApiKeys

    looks_like_an_iban = "DE89370400440532013000-" + "a" * 20  # 43 characters, as token_urlsafe(32) gives
    monkeypatch.setattr(keys_module.secrets, "token_urlsafe", lambda n: looks_like_an_iban)
    store = open_store(server.data_dir)
    try:
        key = ApiKeys(store).create(f"iban-like-{time.time_ns()}", ["alerts:read"], time.time())
    finally:
        store.close()
    assert looks_like_an_iban in key
    with httpx.Client(base_url=server.url, timeout=10) as browser:
        signed_in = browser.post("/v1/session", json={"key": key})
        assert signed_in.status_code == 201, signed_in.text
