"""Ingest stops taking events before the data dir's disk is full (a re-test filled a 1 GB disk
in 13 s through the changelog: every producer refused, processing stopped, and the next start
failed), and readiness says why."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from ringfence.runtimes import disk
from ringfence.runtimes.disk import DiskGuard
from ringfence.testing import event


def test_the_guard_says_why_under_the_floor_and_reads_the_disk_at_most_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readings = iter([2048 * 2**20, 100 * 2**20, 1500 * 2**20])
    reads: list[Path] = []
    now = [1000.0]
    monkeypatch.setattr(disk.time, "monotonic", lambda: now[0])

    def free(path: Path) -> int:
        reads.append(path)
        return next(readings)

    guard = DiskGuard(tmp_path, 1024 * 2**20, free)
    assert guard.shortage() is None
    assert guard.shortage() is None
    now[0] += disk.READ_EVERY_S
    assert guard.shortage() == (
        "the data dir's disk has 100 MiB free, under the 1024 MiB kept free (min_free_disk_mib): "
        "events are refused until some is freed"
    )
    now[0] += disk.READ_EVERY_S
    assert guard.shortage() is None
    assert reads == [tmp_path] * 3


def test_a_data_dir_that_cannot_be_read_is_no_figure(tmp_path: Path) -> None:
    assert DiskGuard(tmp_path / "gone", 1).shortage() is None


@pytest.fixture
def short_of_disk(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server whose floor is above any disk's free space: short from its first request."""
    srv = start_server(tmp_path / "data", env={"RINGFENCE_MIN_FREE_DISK_MIB": str(2**40)})
    yield srv
    srv.stop()


def test_a_server_short_of_disk_refuses_events_with_503_and_is_unready(short_of_disk: EmbeddedServer) -> None:
    server = short_of_disk
    producer = create_key(server.data_dir, "producer", "events:write")
    reader = create_key(server.data_dir, "reader", "alerts:read")
    body = json.dumps([event("card.authorization", at=time.time(), event_id="e-1")])
    refused = httpx.post(
        f"{server.url}/v1/events",
        content=body,
        headers={"Authorization": f"Bearer {producer}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert refused.status_code == 503
    assert "min_free_disk_mib" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"]
    ready = httpx.get(f"{server.url}/readyz", headers={"Authorization": f"Bearer {reader}"}, timeout=10)
    assert ready.status_code == 503
    assert "min_free_disk_mib" in ready.json()["reason"]
    with server.client(reader) as c:
        assert c.get("/v1/alerts").status_code == 200  # reads go on
