"""Attack suite, availability (issue 15, item 1): a poison event posted over the API must not
stop detection for everyone else, before or after a restart; it is quarantined, listed to
admins only, counted, and re-driven after the pack is fixed.

No number in an event ingest takes is poison (a kept product past 64 bits is a float: the last
test); the poison here is a record written to the journal around ingest's checks, a list
holding an integer past 64 bits, which a ``last`` feature keeps and the state codec cannot write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from tests.helpers.quarantine import (
    FIXED,
    KEPT,
    PACK,
    REFERENCE,
    YAML,
    alerted,
    post_accepted,
    score,
    write_around_ingest,
    write_undecodable,
)


@dataclass
class Attacked:
    server: EmbeddedServer  # replaced when a test restarts it
    keys: dict[str, str]


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attacked]:
    data_dir = tmp_path_factory.mktemp("quarantine") / "data"
    keys = {
        "admin": create_key(data_dir, "admin", "admin"),
        "producer": create_key(data_dir, "producer", "events:write"),
        "reader": create_key(data_dir, "reader", "alerts:read"),
    }
    server = start_server(data_dir, env=REFERENCE)
    with server.client(keys["admin"]) as c:
        answer = c.put("/v1/rules", content=PACK.format(version="acme-1", of=KEPT), headers=YAML)
        assert answer.status_code == 200, answer.text
    target = Attacked(server, keys)
    yield target
    assert target.server.stop(), target.server.log_path.read_text()[-3000:]


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_the_quarantine_is_for_admins_only(attacked: Attacked) -> None:
    server, keys = attacked.server, attacked.keys
    for path, method in (("/v1/quarantine", "GET"), ("/v1/quarantine/1/redrive", "POST")):
        assert httpx.request(method, f"{server.url}{path}").status_code == 401
        for role in ("producer", "reader"):
            with server.client(keys[role]) as c:
                assert c.request(method, path).status_code == 403
    with server.client(keys["admin"]) as c:
        assert c.post("/v1/quarantine/999999/redrive").status_code == 404
        assert c.post("/v1/quarantine/%C2%B2/redrive").status_code == 404
        assert c.get("/v1/quarantine", params={"limit": "0"}).status_code == 400
        assert c.get("/v1/quarantine", params={"status": "bogus"}).status_code == 400


def test_a_poison_event_is_quarantined_and_later_events_still_alert_across_a_restart(attacked: Attacked) -> None:
    server, keys = attacked.server, attacked.keys
    post_accepted(server, keys["producer"], score("cus_a", "q-1", 50, 1))
    assert server.stop(), server.log_path.read_text()[-3000:]
    write_around_ingest(server.data_dir, "cus_p", "q-poison")
    server = attacked.server = start_server(server.data_dir, env=REFERENCE)
    post_accepted(server, keys["producer"], score("cus_b", "q-2", 60, 1))
    server.wait_processed(keys["reader"], timeout=30)
    assert {"q-1", "q-2"} <= alerted(server, keys["reader"])

    with server.client(keys["admin"]) as c:
        listing = c.get("/v1/quarantine").json()
    (entry,) = listing["items"]
    assert (entry["source"], entry["event_id"], entry["type"]) == ("acme", "q-poison", "acme.score")
    assert entry["reason"].startswith("OverflowError")
    assert entry["pack_version"] == "acme-1"
    assert listing["counts"]["quarantined"] == 1
    assert "body" not in entry
    with server.client(keys["reader"]) as c:
        metrics = c.get("/metrics").text
        stats = c.get("/v1/stats").json()
    assert "ringfence_events_quarantined_total 1.0" in metrics
    assert stats["quarantine"]["quarantined"] == 1

    server.kill()  # kill -9, then a restart: processing goes on, the poison is not re-run
    restarted = attacked.server = start_server(server.data_dir, env=REFERENCE)
    post_accepted(restarted, keys["producer"], score("cus_c", "q-3", 70, 1))
    restarted.wait_processed(keys["reader"], timeout=30)
    assert {"q-1", "q-2", "q-3"} <= alerted(restarted, keys["reader"])
    assert "q-poison" not in alerted(restarted, keys["reader"])
    with restarted.client(keys["admin"]) as c:
        assert [e["id"] for e in c.get("/v1/quarantine").json()["items"]] == [entry["id"]]  # kept once

    # the fix: keep the value as a float; then re-drive the poison
    with restarted.client(keys["admin"]) as c:
        assert c.put("/v1/rules", content=PACK.format(version="acme-2", of=FIXED), headers=YAML).status_code == 200
        answer = c.post(f"/v1/quarantine/{entry['id']}/redrive")
        assert answer.status_code == 202, answer.text
        assert c.post(f"/v1/quarantine/{entry['id']}/redrive").status_code == 409  # once
        wait_for(lambda: c.get("/v1/quarantine").json()["items"][0]["status"] == "redriven")
        audit = c.get("/v1/audit").json()["items"]
    assert "q-poison" in alerted(restarted, keys["reader"])
    assert any(a["action"] == "quarantine.redrive" and a["target"] == entry["id"] for a in audit)


def test_a_record_the_compiled_core_cannot_decode_is_quarantined_and_the_rest_goes_on(tmp_path: Path) -> None:
    """The default engine's own way (the core's fault raised through its batch, the batch run
    again event by event, the core's partial state dropped), with a record that is no event."""
    data_dir, core = tmp_path / "data", {"RINGFENCE_ENGINE": "native"}
    admin, producer = create_key(data_dir, "admin", "admin"), create_key(data_dir, "producer", "events:write")
    server = start_server(data_dir, env=core)
    with server.client(admin) as c:
        assert c.put("/v1/rules", content=PACK.format(version="acme-1", of="data.a"), headers=YAML).is_success
    post_accepted(server, producer, score("cus_a", "u-1", 50, 1))
    assert server.stop(), server.log_path.read_text()[-3000:]
    write_undecodable(data_dir, "u-broken")
    server = start_server(data_dir, env=core)
    try:
        post_accepted(server, producer, score("cus_a", "u-2", 60, 1), score("cus_b", "u-3", 70, 1))
        server.wait_processed(admin, timeout=30)
        assert {"u-1", "u-2", "u-3"} <= alerted(server, admin)
        with server.client(admin) as c:
            (entry,) = c.get("/v1/quarantine").json()["items"]
        assert entry["reason"].startswith(("ValueError", "DecodeError")), entry["reason"]
        assert (entry["status"], entry["pack_version"]) == ("quarantined", "acme-1")
    finally:
        assert server.stop(), server.log_path.read_text()[-3000:]


def test_a_flood_of_values_no_state_could_hold_is_processed_not_quarantined(tmp_path: Path) -> None:
    """An assessment's flood: the pack keeps ``data.a * data.b`` and sums ``data.b``, and a
    producer sends products past 64 bits, or texts where ``b`` is summed (free-form data). Each
    was poison, quarantined after the whole state was read again: about 6 events a second got
    through, and everyone's alerts waited behind them. A kept product past 64 bits is a float
    now, and a sum skips a value that is no number (``tests/engine/test_native_edges.py``: both
    engines)."""
    data_dir = tmp_path / "data"
    admin, producer = create_key(data_dir, "admin", "admin"), create_key(data_dir, "producer", "events:write")
    server = start_server(data_dir)
    summed = "  - {name: total_b, by: customer_id, agg: sum, of: data.b, on: [acme.score]}\nrules:"
    pack = PACK.format(version="acme-3", of="data.a * data.b").replace("rules:", summed)
    try:
        with server.client(admin) as c:
            assert c.put("/v1/rules", content=pack, headers=YAML).is_success
        flood = [score(f"cus_f{i}", f"f-{i}", 2**40 + i, 2**40) for i in range(500)]
        flood += [{**score(f"cus_t{i}", f"t-{i}", 50, 1), "data": {"a": 50, "b": "n/a"}} for i in range(500)]
        post_accepted(server, producer, *flood)
        post_accepted(server, producer, score("cus_victim", "f-victim", 99, 1))
        server.wait_processed(admin, timeout=60)
        flooded = {a["dedup_key"].split("\x1f")[-1] for a in server.alerts(admin) if a["rule_id"] == "acme_high"}
        assert {e["event_id"] for e in flood} | {"f-victim"} <= flooded
        with server.client(admin) as c:
            assert c.get("/v1/quarantine").json()["counts"]["quarantined"] == 0
    finally:
        assert server.stop(), server.log_path.read_text()[-3000:]
