"""Ingest in a worker process: it answers like in-process ingest, and it never outlives a
killed server (so a restart gets the journal to itself)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ringfence.testing import create_key, event, start_server
from tests.api.test_events_api import alerts_for, post, risky_transfer, uid


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(p) for p in text)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_ingest_worker_exits_when_its_server_is_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    producer = create_key(data_dir, "p", "events:write")
    server = start_server(data_dir)
    try:
        assert post(server, producer, event()).status_code == 202
        workers = children(server.process.pid)
        assert workers, "ringfence up runs ingest in a child process"
    finally:
        server.kill()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "the ingest worker outlived its server"
        time.sleep(0.05)
    restarted = start_server(data_dir)
    try:
        assert post(restarted, producer, event()).status_code == 202
    finally:
        assert restarted.stop()


@pytest.mark.parametrize("ingest_process", ["true", "false"])
def test_ingest_answers_the_same_in_a_worker_or_in_process(tmp_path: Path, ingest_process: str) -> None:
    data_dir = tmp_path / "d"
    producer = create_key(data_dir, "p", "events:write")
    reader = create_key(data_dir, "r", "alerts:read")
    server = start_server(data_dir, env={"RINGFENCE_INGEST_PROCESS": ingest_process})
    try:
        assert (len(children(server.process.pid)) > 0) == (ingest_process == "true")
        customer = uid("cus")
        good = risky_transfer(customer)
        body = [good, {**event(), "type": "card.cloned"}, good]
        response = post(server, producer, body)
        assert response.status_code == 202
        answer = response.json()
        assert answer["accepted"] == 1
        assert answer["duplicates"] == 1
        assert answer["duplicate_event_ids"] == [good["event_id"]]
        assert [r["index"] for r in answer["rejected"]] == [1]
        malformed = post(server, producer, b"{not json")
        assert malformed.status_code == 400
        assert malformed.json()["error"]["details"]["errors"][0]["field"] == "$"
        server.wait_processed(reader)
        assert [a["rule_id"] for a in alerts_for(server, reader, customer)] == ["transfer_high_risk_country"]
    finally:
        assert server.stop(), server.log_path.read_text()[-2000:]
