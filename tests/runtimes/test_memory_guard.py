"""The memory guard: what the kernel says is left (the machine's, or a cgroup's if lower), and
an embedded server that answers 503 past the floor of memory, or of disk, instead of growing
until it is killed or the disk is full."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from ringfence.clock import iso
from ringfence.runtimes import floor
from ringfence.runtimes.memory import MemoryGuard, available_bytes
from ringfence.testing import event

GIB = 2**30


def machine(tmp_path: Path, available_kb: int) -> Path:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   {available_kb} kB\n")
    return meminfo


def group(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def test_the_machines_available_memory_when_no_cgroup_limits_it(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.write_text("0::/\n")
    group(tmp_path / "cgroup", {"memory.max": "max\n", "memory.current": "123\n", "memory.stat": "inactive_file 0\n"})
    assert available_bytes(machine(tmp_path, 8_000_000), tmp_path / "cgroup", own) == 8_000_000 * 1024


def test_a_cgroup_v2_limit_under_the_machines_memory_is_what_is_left(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.write_text("0::/system.slice/ringfence.service\n")
    stat = "anon 2000000000\ninactive_file 500000000\nactive_file 1\n"
    group(
        tmp_path / "cgroup" / "system.slice" / "ringfence.service",
        {"memory.max": f"{4 * GIB}\n", "memory.current": f"{3 * GIB}\n", "memory.stat": stat},
    )
    left = available_bytes(machine(tmp_path, 20_000_000), tmp_path / "cgroup", own)
    assert left == GIB + 500_000_000  # the limit less what it holds, its reclaimable file cache apart


def test_a_cgroup_v1_limit_seen_at_the_mounts_root_in_a_container(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.write_text("4:memory:/docker/0123abcd\n0::/\n")  # that path is the host's: the container sees its root
    stat = "cache 100\ntotal_inactive_file 1000\n"
    group(
        tmp_path / "cgroup" / "memory",
        {"memory.limit_in_bytes": f"{2 * GIB}\n", "memory.usage_in_bytes": f"{GIB}\n", "memory.stat": stat},
    )
    assert available_bytes(machine(tmp_path, 20_000_000), tmp_path / "cgroup", own) == GIB + 1000


def test_nothing_readable_is_no_figure(tmp_path: Path) -> None:
    assert available_bytes(tmp_path / "none", tmp_path / "none", tmp_path / "none") is None


def test_the_guard_says_why_under_the_floor_and_reads_the_kernel_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readings = iter([900 * 2**20, 300 * 2**20, 700 * 2**20])
    reads: list[float] = []
    now = [1000.0]
    monkeypatch.setattr(floor.time, "monotonic", lambda: now[0])

    def available() -> int | None:
        reads.append(now[0])
        return next(readings)

    guard = MemoryGuard(512 * 2**20, available)
    assert guard.shortage() is None
    assert guard.shortage() is None
    now[0] += floor.READ_EVERY_S
    assert guard.shortage() == (
        "the machine has 300 MiB of memory left, under the 512 MiB kept free (min_free_memory_mib): "
        "events are refused until some is freed"
    )
    now[0] += floor.READ_EVERY_S
    assert guard.shortage() is None
    assert reads == [1000.0, 1001.0, 1002.0]


@pytest.fixture(params=["memory", "disk"])
def short_of(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EmbeddedServer, str]]:
    """A server whose floor of memory, or of disk, is above any machine's: short from its first
    request (the disk's: a re-test filled a 1 GB disk in 13 s through the changelog)."""
    setting = f"min_free_{request.param}_mib"
    srv = start_server(tmp_path / "data", env={f"RINGFENCE_{setting.upper()}": str(2**40)})
    yield srv, setting
    srv.stop()


def test_a_server_short_of_memory_or_disk_refuses_events_with_503_and_is_unready(
    short_of: tuple[EmbeddedServer, str],
) -> None:
    server, setting = short_of
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
    assert setting in refused.json()["error"]["message"]
    assert refused.headers["retry-after"]
    ready = httpx.get(f"{server.url}/readyz", headers={"Authorization": f"Bearer {reader}"}, timeout=10)
    assert ready.status_code == 503
    assert setting in ready.json()["reason"]
    with server.client(reader) as c:
        assert c.get("/v1/alerts").status_code == 200  # reads go on


@pytest.mark.parametrize("refused", [True, False], ids=["under-half-the-floor", "under-the-floor"])
def test_changes_to_alerts_and_silences_are_refused_under_half_the_disks_floor(tmp_path: Path, refused: bool) -> None:
    """A hostile test's leftover: people's changes were taken whatever the disk had left, and
    many keys' budgets together could fill the part of the floor kept for the processor. Under
    the floor ingest stops and analysts go on; under half of it, their changes answer 503 too."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    free_mib = shutil.disk_usage(data_dir).free // 2**20
    floor_mib = 2**40 if refused else free_mib * 3 // 2  # half of it is above what is free, or below
    server = start_server(data_dir, env={"RINGFENCE_MIN_FREE_DISK_MIB": str(floor_mib)})
    try:
        analyst = create_key(server.data_dir, "analyst", "alerts:read", "alerts:write")
        silence = {"matchers": ["customer_id=cus_1"], "ends_at": iso(time.time() + 3600), "comment": "maintenance"}
        with server.client(analyst) as c:
            created = c.post("/v1/silences", json=silence)
            if refused:
                assert created.status_code == 503, created.text
                assert "changes to alerts and silences are refused" in created.json()["error"]["message"]
                assert int(created.headers["retry-after"]) >= 1
                assert c.get("/v1/silences").json()["items"] == []  # nothing was written
            else:
                assert created.status_code == 201, created.text
            redriven = c.post("/v1/notifications/ntf_missing/redrive")  # a review: a change too
            assert redriven.status_code == (503 if refused else 404), redriven.text
            assert c.get("/v1/alerts").status_code == 200  # reads go on
        # admins' writes too (each stored a version, or wrote the log, into the processor's half):
        # refused before their body is read; with room, each gets its usual answer
        admin = create_key(server.data_dir, "admin", "admin")
        rates = {"rates": [{"currency": "USD", "rate": "0.9", "as_of": time.strftime("%Y-%m-%d")}]}
        with server.client(admin) as c:
            answers = {
                "rules": c.put("/v1/rules", content=b"not: [a pack", headers={"content-type": "application/yaml"}),
                "list": c.put("/v1/lists/no_such_list", json={"values": ["a"]}),
                "fx": c.put("/v1/fx/rates", json=rates),
                "quarantine": c.post("/v1/quarantine/424242/redrive"),
            }
            fx_after = c.get("/v1/fx/rates").json()
        statuses = {what: answer.status_code for what, answer in answers.items()}
        if refused:
            assert statuses == dict.fromkeys(answers, 503), {w: a.text for w, a in answers.items()}
            assert all(int(a.headers["retry-after"]) >= 1 for a in answers.values())
            assert "admins' writes" in answers["fx"].json()["error"]["message"]
            assert fx_after["version"] == 0, fx_after  # nothing was written
        else:
            assert statuses == {"rules": 400, "list": 404, "fx": 200, "quarantine": 404}, statuses
    finally:
        server.stop()
