"""Abuse limits over real HTTP: per-key rate limits and failed-authentication limits answer
429 with Retry-After, and the server stays healthy and keeps processing."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from ringfence.bench.servers import create_key, start_server
from ringfence.testing import event
from tests.helpers.http import risky_transfer, silence_of_3_kib, uid
from tests.helpers.receivers import RecordingReceiver


def test_a_re_drive_is_charged_for_each_alert_its_letter_notes_if_it_dies_again(tmp_path: Path) -> None:
    """A hostile test: an alerts:write key re-drove a dead letter of 500 alerts each time it
    died again (a receiver answering 400): each death noted it in every alert's history, 12 GB
    an hour of store and 15 bodies of 184 KB a second to the receiver, the budget never charged.
    A re-drive costs 1 KiB and 1 KiB for each alert of its letter, into debt if need be, and is
    charged all of it before it is made: charged the rest after, re-drives at once each passed
    the check of their first KiB (40 at once left some 20 MiB of debt, a review found), and one
    whose alerts' KiBs were past what the key had left went through."""
    receiver = RecordingReceiver(statuses=[400])  # a 4xx is final: a dead letter at once
    config = tmp_path / "alerting.yaml"
    config.write_text(
        "receivers:\n"
        f"  - name: hook\n    webhook: {{url: '{receiver.url}/hook', secret_env: RINGFENCE_SECRET_TEST_HOOK}}\n"
        "route: {receiver: hook, group_by: [rule_id], group_wait: 1s}\n"
    )
    data_dir = tmp_path / "d"
    admin = create_key(data_dir, "admin", "admin")
    writer, other_writer = (create_key(data_dir, name, "alerts:read", "alerts:write") for name in ("w1", "w2"))
    env = {
        "RINGFENCE_ALERTING": str(config),
        "RINGFENCE_SECRET_TEST_HOOK": "k",
        "RINGFENCE_PEOPLE_WRITES_MIB_PER_HOUR": str(24 / 1024),  # 24 KiB an hour
    }
    server = start_server(data_dir, env=env)
    try:
        with server.client(admin) as c:
            assert c.post("/v1/events", json=[risky_transfer(uid("cus")) for _ in range(30)]).status_code == 202
            deadline = time.monotonic() + 20
            while not (dead := c.get("/v1/notifications", params={"status": "dead"}).json()["items"]):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        (letter,) = [d for d in dead if len(d["alert_ids"]) >= 25]
        with server.client(writer) as c:
            for _ in range(4):  # 3 KiB each: 12 KiB left, under the letter's 26 KiB or more
                assert c.post("/v1/silences", json=silence_of_3_kib()).status_code == 201
            over = c.post(f"/v1/notifications/{letter['id']}/redrive")
            assert over.status_code == 429, over.text
            assert over.json()["error"]["code"] == "change_budget"
            assert c.get("/v1/notifications", params={"status": "dead"}).json()["items"][0]["id"] == letter["id"]
        with server.client(other_writer) as c:  # a full budget: the cost over it goes through, into debt
            assert c.post(f"/v1/notifications/{letter['id']}/redrive").status_code == 200
            alert = letter["alert_ids"][0]
            refused = c.post(f"/v1/alerts/{alert}/ack", json={"reason": "on it"})  # 1 KiB, after 31 more spent
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "change_budget"
    finally:
        server.stop()
        receiver.close()


def test_limits_answer_429_with_retry_after_and_the_server_keeps_working(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    key = create_key(data_dir, "producer", "events:write", "alerts:read")
    other = create_key(data_dir, "other", "alerts:read")
    watcher = create_key(data_dir, "watcher", "alerts:read")  # its polls spend no one else's tokens
    # a token every 20 s: none comes back while the 7 requests are made (0.9 s at 1 a second
    # was near enough for a slow host's last request to find one)
    env = {
        "RINGFENCE_RATE_LIMIT_PER_S": "0.05",
        "RINGFENCE_RATE_LIMIT_BURST": "3",
        "RINGFENCE_AUTH_FAILURES_PER_MIN": "5",
    }
    server = start_server(data_dir, env=env)
    try:
        with server.client(key) as c:
            statuses = [c.post("/v1/events", json=[event()]).status_code for _ in range(6)]
            assert statuses[:3] == [202, 202, 202]
            limited = c.get("/v1/alerts")
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.json()["error"]["code"] == "rate_limited"
        with server.client(other) as c:
            assert c.get("/v1/alerts").status_code == 200  # one key's flood does not starve another
        bad = [
            httpx.get(f"{server.url}/v1/alerts", headers={"Authorization": "Bearer nope"}).status_code for _ in range(7)
        ]
        assert bad[:5] == [401] * 5
        assert bad[-1] == 429
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        body = server.wait_processed(watcher)
        assert body["processed_offset"] == 3
    finally:
        assert server.stop()


def test_a_keys_changes_to_alerts_and_silences_are_bounded_in_bytes_an_hour(tmp_path: Path) -> None:
    """A hostile test: each change was bounded, a key's changes only by its rate limit: comments
    on alert after alert, assignments back and forth and silences ending at once (kept 30 days)
    grew the store 28-290 GB a day for one analyst key. Past its budget (here 10 KiB an hour):
    429 with Retry-After, nothing stored; another key goes on."""
    data_dir = tmp_path / "d"
    producer = create_key(data_dir, "producer", "events:write", "alerts:read")
    analyst, other = (create_key(data_dir, name, "alerts:read", "alerts:write") for name in ("ana", "bob"))
    server = start_server(data_dir, env={"RINGFENCE_PEOPLE_WRITES_MIB_PER_HOUR": str(10 / 1024)})
    try:
        with server.client(producer) as c:
            assert c.post("/v1/events", json=[risky_transfer(uid("cus"))]).status_code == 202
        server.wait_processed(producer)
        with server.client(analyst) as c:
            alert = c.get("/v1/alerts", params={"limit": 1}).json()["items"][0]["id"]
            text = {"text": "é" * 2_000}  # 4,000 bytes stored, and charged
            for _ in range(3):  # changes not made are not charged
                assert c.post("/v1/alerts/alt_missing/comments", json=text).status_code == 404
                assert c.delete("/v1/silences/sil_missing").status_code == 404
            statuses = [c.post(f"/v1/alerts/{alert}/comments", json=text).status_code for _ in range(3)]
            assert statuses == [201, 201, 429]  # 5 KB a change (its bytes and 1 KiB), 10 KiB an hour
            refused = c.post(f"/v1/alerts/{alert}/assign", json={"assignee": "ana"})
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "change_budget"
            assert int(refused.headers["retry-after"]) > 0
            ends = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
            silence = {"matchers": ["rule_id=x"], "ends_at": ends, "comment": "c"}
            assert c.post("/v1/silences", json=silence).status_code == 429
            assert len(c.get(f"/v1/alerts/{alert}").json()["comments"]) == 2
        with server.client(other) as c:  # a budget of its own
            assert c.post(f"/v1/alerts/{alert}/assign", json={"assignee": "bob"}).status_code == 200
            assert c.post(f"/v1/alerts/{alert}/ack", json={"reason": "on it"}).status_code == 200
    finally:
        assert server.stop()
