"""A pack that a crafted record poisons, and its events: for the quarantine tests of each runtime.

No number in an event ingest takes poisons a pack: its integers are within 64 bits, a feature
keeps an integer past what a state holds (a product) as a float, and an aggregate of numbers
skips a value that is none. A record written to the log around ingest's checks (by an older
release, or another writer of the topic) still can: :func:`poison` holds an integer past 64
bits in a list (``data.raw``), which :data:`KEPT`'s ``last_product`` keeps as it is and the
state codec cannot write. :data:`FIXED` is the pack's fix: the number, kept as a float. The
reference engine reads such a number as an integer; the compiled core reads a JSON number past
64 bits as a float, so servers that are to quarantine it run the reference engine
(:data:`REFERENCE`).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from ringfence.config import DEFAULT_PARTITIONS
from ringfence.events.model import Event, encode_event
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.runtimes.embedded.platform import JOURNAL_FILE
from ringfence.testing import event
from tests.helpers.http import Api

# ``of``: the kept feature
PACK = """
version: {version}
types: [acme.score]
features:
  - name: last_product
    by: customer_id
    agg: last
    of: {of}
    on: [acme.score]
rules:
  - id: acme_high
    on: [acme.score]
    when: data.a > 10
    severity: high
    audience: fraud
    title: "high score {{customer_id}}"
    dedup: "{{event_id}}"
"""
KEPT = "data.raw"  # the pack a poison record breaks
FIXED = "data.a"  # its fix: a number, kept as a float
POISON = 2**70  # past 64 bits: ingest refuses it, a state cannot hold it in a list
YAML = {"Content-Type": "application/yaml"}
REFERENCE = {"RINGFENCE_ENGINE": "python"}  # a server's environment: the engine that keeps POISON whole


def post_accepted(server: Api, key: str, *events: dict[str, Any]) -> None:
    """POST ``events``, which must all be accepted."""
    with server.client(key) as c:
        answer = c.post("/v1/events", json=list(events))
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == len(events)


def score(customer: str, event_id: str, a: int, b: int) -> dict[str, Any]:
    """An ``acme.score`` event: ``acme_high`` alerts when ``a > 10``."""
    return event("acme.score", at=time.time(), customer_id=customer, event_id=event_id, source="acme", a=a, b=b)


def poison(customer: str, event_id: str) -> Event:
    """An ``acme.score`` event with ``a`` = :data:`POISON`, as the log stores events."""
    return Event(event_id, "acme.score", time.time(), "acme", {"a": POISON, "b": 1, "raw": [POISON]}, customer)


def poison_record(customer: str, event_id: str) -> bytes:
    """:func:`poison` in the stored form (a Kafka record's value)."""
    return encode_event(poison(customer, event_id))


def write_around_ingest(data_dir: Path, customer: str, event_id: str) -> None:
    """Append a poison record to a stopped embedded server's journal (a running one's ingest
    worker holds the journal's duplicate index)."""
    journal = SqliteLog(data_dir / JOURNAL_FILE, DEFAULT_PARTITIONS)
    try:
        journal.append([poison(customer, event_id)], time.time())
    finally:
        journal.close()


def write_undecodable(data_dir: Path, event_id: str) -> None:
    """Append a record that is no event to a stopped embedded server's journal (damaged, or an
    older release's): poison to either engine's decoder."""
    journal = SqliteLog(data_dir / JOURNAL_FILE, DEFAULT_PARTITIONS)
    try:
        (offset,) = journal.append([poison("cus_u", event_id)], time.time())
        segment = [s for s in journal.segments() if s.first <= (offset or 0)][-1]
        assert segment.path is not None
        with sqlite3.connect(segment.path) as conn:
            conn.execute("UPDATE journal SET body = x'00ff' WHERE offset = ?", (offset,))
        conn.close()
    finally:
        journal.close()


def alerted(server: Api, key: str) -> set[str]:
    """The event ids ``acme_high`` alerted on (each dedup key is the event's source, then its id)."""
    with server.client(key) as c:
        answer = c.get("/v1/alerts", params={"rule_id": "acme_high", "limit": 500})
    assert answer.status_code == 200, answer.text
    return {a["dedup_key"].split("\x1f")[-1] for a in answer.json()["items"]}
