"""``ringfence simulate --url``: traffic posted to a real server, and events the server rejects
(a key limited to one source, the simulated traffic coming from many) fail the run, saying how
many and why, instead of a success that sent a fraction of them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, ringfence_cli, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    srv = start_server(tmp_path_factory.mktemp("simulate-url") / "data")
    yield srv
    assert srv.stop(), srv.log_tail()


def simulate(server: EmbeddedServer, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # nosec B603
        [sys.executable, "-m", "ringfence", "simulate", "--events", "2000", "--url", server.url, "--key", key],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_events_the_server_rejects_fail_the_run_naming_how_many(server: EmbeddedServer) -> None:
    web_only = (
        ringfence_cli(
            "keys",
            "create",
            "--name",
            "web-only",
            "--scope",
            "events:write",
            "--source",
            "web",
            data_dir=server.data_dir,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    run = simulate(server, web_only)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "the server rejected" in run.stderr
    assert "of the events, such as" in run.stderr
    assert "source" in run.stderr  # the first reason, from the server's answer


def test_a_key_for_every_source_sends_them_all(server: EmbeddedServer) -> None:
    producer = create_key(server.data_dir, "simulator", "events:write")
    run = simulate(server, producer)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2,000 events" in run.stdout
