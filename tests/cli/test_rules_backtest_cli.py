"""``ringfence rules backtest``: a candidate pack against the live one over a real server's
stored events, through its API (DESIGN §6's CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringfence.bench.servers import EmbeddedServer, create_key, start_server
from ringfence.engine import default_pack_text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    srv = start_server(tmp_path_factory.mktemp("backtest-cli") / "data")
    producer = create_key(srv.data_dir, "simulator", "events:write")
    fed = cli("simulate", "--events", "3000", "--url", srv.url, "--key", producer)
    assert fed.returncode == 0, fed.stderr
    yield srv
    assert srv.stop(), srv.log_tail()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # nosec B603
        [sys.executable, "-m", "ringfence", *args], capture_output=True, text=True, timeout=300
    )


def test_a_candidate_is_compared_with_the_live_pack_over_the_stored_events(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    analyst = create_key(server.data_dir, "tuner", "rules:read", "alerts:read")
    candidate = tmp_path / "candidate.yaml"
    looser = default_pack_text().replace("when: card_auths_10m >= 8", "when: card_auths_10m >= 2")
    assert looser != default_pack_text()
    candidate.write_text(looser.replace("version:", "version: candidate-1 #", 1))
    as_json = cli("rules", "backtest", str(candidate), "--url", server.url, "--key", analyst, "--json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["events"] == result["of"] == 3000
    assert result["truncated"] is False
    velocity = result["hits"]["card_velocity"]
    assert velocity["candidate"] > velocity["live"]
    shown = cli("rules", "backtest", str(candidate), "--url", server.url, "--key", analyst)
    assert shown.returncode == 0, shown.stderr
    assert "card_velocity" in shown.stdout
    assert f"+{velocity['candidate'] - velocity['live']}" in shown.stdout
    assert "3,000 of 3,000 events" in shown.stdout


def test_a_bad_pack_a_key_short_of_scopes_and_no_server_are_each_said(server: EmbeddedServer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(default_pack_text().replace("when: card_auths_10m >= 8", "when: card_auths_10m >=== 8"))
    refused = cli("rules", "backtest", str(broken), "--url", server.url, "--key", "rf_unused")
    assert refused.returncode == 1
    assert "card_velocity" in refused.stderr  # named before anything is sent
    good = tmp_path / "good.yaml"
    good.write_text(default_pack_text())
    reader = create_key(server.data_dir, "reader-only", "rules:read")
    short = cli("rules", "backtest", str(good), "--url", server.url, "--key", reader)
    assert short.returncode == 2
    assert "403" in short.stderr
    assert "alerts:read" in short.stderr
    nobody = cli("rules", "backtest", str(good), "--url", "http://127.0.0.1:9", "--key", reader)
    assert nobody.returncode == 2
    assert "cannot run the back-test" in nobody.stderr
