"""kill -9 while events stream in: nothing acknowledged is lost, no alert is duplicated.

A sequential producer posts a deterministic workload; the server is killed twice
mid-stream and restarted on the same data dir; the producer resends what was not
acknowledged (and, like any at-least-once producer, one batch that was). The final
alerts must equal a clean run's, id for id and count for count, and so must the
customers' feature values.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from ringfence.events import decode_event
from ringfence.runtimes.embedded.journal import SqliteLog
from ringfence.simulate import Traffic
from tests.helpers.http import all_alerts, post_batch

BATCH = 100
# journal segments roll in the crash run, while a resent batch, a server restart after its
# first copy, still falls in the duplicate window (kills inside a roll: test_journal_crash.py)
SEGMENTS_OF_FEW_SECONDS = {"RINGFENCE_JOURNAL_SEGMENT_S": "6", "RINGFENCE_LOG_RETENTION_S": "3600"}


def workload() -> list[list[dict[str, Any]]]:
    traffic = Traffic(seed=11, customers=300, fraud_rate=0.02, source_prefix="crash")
    events = list(traffic.stream(start=time.time() - 3 * 3600, rate_per_s=20.0, count=6_000))
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]


def features(server: EmbeddedServer, key: str, customers: list[str]) -> dict[str, Any]:
    with server.client(key) as c:
        return {cus: c.get(f"/v1/customers/{cus}/features").json()["features"] for cus in customers}


def clean_run(
    data_dir: Path, batches: list[list[dict[str, Any]]], customers: list[str]
) -> tuple[dict[str, tuple[str, int]], dict[str, Any]]:
    key = create_key(data_dir, "producer", "events:write", "alerts:read")
    server = start_server(data_dir)
    try:
        for batch in batches:
            post_batch(server, key, batch)
        server.wait_processed(key)
        return all_alerts(server, key), features(server, key, customers)
    finally:
        server.stop()


def test_kill_9_mid_stream_loses_no_acknowledged_event_and_duplicates_no_alert(tmp_path: Path) -> None:
    batches = workload()
    customers = sorted({e["customer_id"] for b in batches for e in b if "customer_id" in e})[:40]
    expected, expected_features = clean_run(tmp_path / "clean", batches, customers)
    assert len(expected) >= 10, "the workload should raise alerts"

    data_dir = tmp_path / "crash"
    key = create_key(data_dir, "producer", "events:write", "alerts:read")
    acked: list[int] = []
    next_batch = 0
    duplicates = 0
    for kill_after in (15, 35, None):
        server = start_server(data_dir, env=SEGMENTS_OF_FEW_SECONDS)
        if acked:  # an at-least-once producer resends its last acknowledged batch
            duplicates += post_batch(server, key, batches[acked[-1]])["duplicates"]
        killed = threading.Event()
        if kill_after is not None:
            target = kill_after

            def killer(srv: EmbeddedServer = server, target: int = target, killed: threading.Event = killed) -> None:
                while len(acked) < target:
                    time.sleep(0.001)
                time.sleep(0.005)  # land inside the next request or processor batch
                srv.kill()
                killed.set()

            threading.Thread(target=killer, daemon=True).start()
        while next_batch < len(batches):
            try:
                post_batch(server, key, batches[next_batch])
            except (httpx.HTTPError, AssertionError):
                assert killed.wait(5), "a request failed without a kill"
                break
            acked.append(next_batch)
            next_batch += 1
        else:
            server.wait_processed(key)
            final = all_alerts(server, key)
            final_features = features(server, key, customers)
            server.stop()
        killed.wait(5)
    assert duplicates == 2 * BATCH
    assert acked == list(range(len(batches)))
    assert final == expected
    assert final_features == expected_features  # no feature lost or double-counted

    journal = SqliteLog.open_read_only(data_dir / "journal.sqlite3")
    records = journal.read(0, 1_000_000)
    assert [r.offset for r in records] == list(range(1, len(records) + 1))  # dense, none reused
    assert journal.count() == len(records)
    stored = Counter(decode_event(r.body).event_id for r in records)
    assert set(stored) == {e["event_id"] for b in batches for e in b}
    assert all(n == 1 for n in stored.values())
